"""The build/tear-down contract every lab target follows."""

from __future__ import annotations

from typing import Self

from ._sys import LabError


class LabTarget:
    """A target built by :meth:`create` and removed by :meth:`destroy`; also a context manager.

    Subclasses implement :meth:`_create` (the build steps) and :meth:`destroy`,
    which must also undo a partial build: :meth:`create` calls it when a step fails.
    """

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> Self:
        """Build the target; after a failure remove what was built, then re-raise."""
        try:
            self._create()
        except BaseException:
            try:
                self.destroy()
            except LabError:
                pass  # the build error is the one to report
            raise
        return self

    def _create(self) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove everything :meth:`create` made (keeps going after failures)."""
        raise NotImplementedError
