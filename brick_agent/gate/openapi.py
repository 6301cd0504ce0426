"""OpenAPI 3 description of the gate app (hand-written; served at ``/openapi.json``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import brick_agent

PROTOCOL_NAMES = ("ISCSI", "ISER", "NVMEOF", "NVME", "FIBRE_CHANNEL", "FC")
_SCSI_PROTOCOLS = ["ISCSI", "ISER", "FIBRE_CHANNEL", "FC"]
_NVME_PROTOCOLS = ["NVMEOF", "NVME"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error_responses(*codes: str) -> dict[str, Any]:
    text = {
        "400": "Bad request: malformed body, wrong content type, unknown protocol or "
        "invalid connection properties",
        "401": "Missing or wrong bearer token",
        "404": "Not found",
        "405": "Method not allowed",
        "409": "The volume's identity does not match, or its device is busy",
        "413": "Request body too large",
        "500": "Internal error (never carries a traceback)",
        "501": "The host or this build lacks what the protocol needs",
        "502": "Target unreachable or authentication failed",
        "503": "A lock could not be taken in time",
    }
    return {
        c: {"description": text[c], "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


_SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "brick_agent gate",
        "version": brick_agent.__version__,
        "description": (
            "Read-only view of one host's volumes for CI gates (os-brick's 'brick fetch "
            "volume paths' API): connector properties, volumes and paths per protocol, "
            "and a leftover audit. Never run on production hosts. No attach/detach."
        ),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message", "key"],
                "properties": {
                    "error": {"type": "string", "description": "type name of the error"},
                    "message": {"type": "string"},
                    "key": {
                        "type": "string",
                        "nullable": True,
                        "description": "offending property or field, when known",
                    },
                },
            },
            "Protocol": {"type": "string", "enum": list(PROTOCOL_NAMES)},
            "PathsRequest": {
                "type": "object",
                "required": ["protocol", "connection_properties"],
                "additionalProperties": False,
                "properties": {
                    "protocol": {"$ref": "#/components/schemas/Protocol"},
                    "connection_properties": {
                        "type": "object",
                        "description": "connection properties as a volume service's "
                        "initialize_connection returns them (or Cinder's "
                        "{driver_volume_type, data} envelope)",
                        "additionalProperties": True,
                    },
                },
            },
            "PathsResponse": {
                "type": "object",
                "required": [
                    "protocol",
                    "paths",
                    "present",
                    "search_path",
                    "host",
                    "objects",
                    "missing",
                    "shared",
                ],
                "properties": {
                    "protocol": {"type": "string"},
                    "paths": {"type": "array", "items": {"type": "string"}},
                    "present": {"type": "boolean"},
                    "search_path": {"type": "string", "nullable": True},
                    "host": {"type": "string", "description": "this host's name"},
                    "objects": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/VolumeObject"},
                        "description": "everything of the volume on this host: its devices, "
                        "the maps and /dev/disk links over them, dangling links naming it, "
                        "its target's sessions or controllers left without any volume "
                        "(empty: nothing of it here)",
                    },
                    "missing": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "addresses the properties name where this host has "
                        "no path of the volume",
                    },
                    "shared": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/VolumeObject"},
                        "description": "objects of the volume that stay because another "
                        "volume uses them (an NVMe namespace visible through a controller "
                        "serving other namespaces)",
                    },
                },
            },
            "VolumeObject": {
                "type": "object",
                "required": ["kind", "name", "detail"],
                "properties": {
                    "kind": {
                        "type": "string",
                        "enum": ["device", "map", "link", "session", "controller"],
                    },
                    "name": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
            "VolumesResponse": {
                "type": "object",
                "required": ["volumes", "errors"],
                "properties": {
                    "volumes": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "object"}},
                    },
                    "errors": {"type": "object", "additionalProperties": _ERROR},
                },
            },
            "ExpectedVolume": {
                "description": "a volume that should be attached: a SCSI protocol with its "
                "WWID, or NVMe-oF with its UUID, NGUID or WWID",
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["protocol", "wwid"],
                        "additionalProperties": False,
                        "properties": {
                            "protocol": {"type": "string", "enum": _SCSI_PROTOCOLS},
                            "wwid": {"type": "string", "minLength": 1},
                            "name": {"type": "string", "nullable": True},
                        },
                    },
                    {
                        "type": "object",
                        "required": ["protocol"],
                        "additionalProperties": False,
                        "anyOf": [
                            {"required": ["uuid"]},
                            {"required": ["nguid"]},
                            {"required": ["wwid"]},
                        ],
                        "properties": {
                            "protocol": {"type": "string", "enum": _NVME_PROTOCOLS},
                            "wwid": {"type": "string", "minLength": 1},
                            "uuid": {"type": "string", "minLength": 1},
                            "nguid": {"type": "string", "minLength": 1},
                            "name": {"type": "string", "nullable": True},
                        },
                    },
                ],
            },
            "AuditRequest": {
                "type": "object",
                "required": ["expected"],
                "additionalProperties": False,
                "properties": {
                    "expected": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ExpectedVolume"},
                    }
                },
            },
            "Finding": {
                "type": "object",
                "required": ["kind", "name", "detail"],
                "properties": {
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
            "AuditReport": {
                "type": "object",
                "required": ["clean", "findings", "counts"],
                "properties": {
                    "clean": {"type": "boolean"},
                    "findings": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Finding"},
                    },
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "errors": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "security": [{"bearer": []}, {}],
    "paths": {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness; never needs the token",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the app is up",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {
                                        "status": {"type": "string"},
                                        "version": {"type": "string"},
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_error_responses("401"),
                },
            }
        },
        "/v1/connector": {
            "get": {
                "operationId": "getConnectorProperties",
                "summary": "This host's connector properties (never creates an NVMe identity)",
                "responses": {
                    "200": {
                        "description": "connector properties",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_error_responses("401", "500"),
                },
            }
        },
        "/v1/volumes": {
            "get": {
                "operationId": "getAllAvailableVolumes",
                "summary": "Volumes of one protocol (or of every protocol) present on the host",
                "parameters": [
                    {
                        "name": "protocol",
                        "in": "query",
                        "required": False,
                        "schema": {"$ref": "#/components/schemas/Protocol"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "volumes by protocol",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/VolumesResponse"}
                            }
                        },
                    },
                    **_error_responses("400", "401", "500", "501"),
                },
            }
        },
        "/v1/paths": {
            "post": {
                "operationId": "getVolumePaths",
                "summary": "Paths of one volume that exist on the host now",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PathsRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the volume's paths",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/PathsResponse"}
                            }
                        },
                    },
                    **_error_responses("400", "401", "413", "500", "501"),
                },
            }
        },
        "/v1/audit": {
            "parameters": [
                {
                    "name": "nvme_grace",
                    "in": "query",
                    "required": False,
                    "description": "seconds to wait before re-reading NVMe controllers found "
                    "connecting/resetting/deleting; only those still in that "
                    "state are reported (default 0)",
                    "schema": {"type": "number", "minimum": 0, "maximum": 60},
                }
            ],
            "get": {
                "operationId": "audit",
                "parameters": [
                    {
                        "name": "expected",
                        "in": "query",
                        "required": False,
                        "description": "'ledger': the volumes of the attachment ledger "
                        "([brick_agent] ledger_path) are the expected ones",
                        "schema": {"type": "string", "enum": ["ledger"]},
                    }
                ],
                "summary": "Leftover audit of the host",
                "responses": {
                    "200": {
                        "description": "audit report",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AuditReport"}
                            }
                        },
                    },
                    **_error_responses("400", "401", "500"),
                },
            },
            "post": {
                "operationId": "auditExpected",
                "summary": "Leftover audit, also comparing with the volumes that should be "
                "attached",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/AuditRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "audit report",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AuditReport"}
                            }
                        },
                    },
                    **_error_responses("400", "401", "413", "500"),
                },
            },
        },
    },
}


def openapi_spec(protocols: Iterable[str] | None = None) -> dict[str, Any]:
    """A fresh copy of the OpenAPI document.

    ``protocols``: the protocol names this build can serve (the ``Protocol``
    enum); default every name brick_agent knows.
    """
    spec = copy.deepcopy(_SPEC)
    if protocols is not None:
        spec["components"]["schemas"]["Protocol"]["enum"] = list(protocols)
    return spec
