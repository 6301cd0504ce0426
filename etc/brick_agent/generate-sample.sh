#!/bin/sh
# Regenerate brick_agent.conf.sample from the option definitions.
# Run from the repository root: sh etc/brick_agent/generate-sample.sh
# oslo.privsep documents its options under [privsep]; brick_agent's context
# reads them from [brick_agent_privileged], so the section is renamed and the
# defaults our PrivContext sets are shown.
set -eu
out=etc/brick_agent/brick_agent.conf.sample
python3 -m oslo_config.generator --namespace brick_agent --namespace oslo.privsep \
    --wrap-width 79 |
python3 -c '
import sys
text = sys.stdin.read()
head, sep, tail = text.partition("[privsep]\n")
assert sep, "no [privsep] section generated"
body = tail.split("\n#\n# From oslo.privsep", 1)[1]
note = ("[brick_agent_privileged]\n"
        "# oslo.privsep options of brick_agent'"'"'s privsep daemon (the PrivContext\n"
        "# brick_agent.privileged.default). The daemon is started lazily through\n"
        "# [brick_agent]/privsep_helper_command (or helper_command below).\n\n"
        "#\n# From oslo.privsep")
body = body.replace("#capabilities =\n", "#capabilities = CAP_SYS_ADMIN\n")
body = body.replace("#logger_name = oslo_privsep.daemon\n",
                    "#logger_name = brick_agent.privileged\n")
sys.stdout.write(head + note + body)
' > "$out"
echo "wrote $out"
