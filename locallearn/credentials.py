"""Credentials never written down: a tracking URI may carry them (`http://user:pw@host`),
and the URI is recorded in many places (MLflow params, mlflow_run.json, metrics.json's
config, job logs, command lines) that end up in committed results.

    redact_uri(uri)        the URI as it may be written anywhere: user-info removed
    take_credentials(uri)  the same, after handing the user-info to MLflow through its own
                           variables MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
                           (this process and its children), so the run still authenticates

Credentials belong in those two environment variables in the first place; a URI with
user-info is accepted only so that it is not silently recorded. Torch-free, no imports
from the package: the workflow's scripts use it too.
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

USERNAME_VAR = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VAR = "MLFLOW_TRACKING_PASSWORD"


def _split(uri: str):
    """(parts, user, password) of a URI with user-info; None when it has none."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return parts._replace(netloc=hostport), unquote(user), unquote(password)


def redact_uri(uri: str | None) -> str | None:
    """`uri` without its user-info (`http://u:pw@h:5000/x` -> `http://h:5000/x`); any
    other value unchanged (None, a path, a sqlite:/// URI)."""
    if not uri:
        return uri
    split = _split(uri)
    return uri if split is None else urlunsplit(split[0])


def take_credentials(uri: str | None) -> str | None:
    """redact_uri(uri), after exporting its user and password as MLflow's variables. A
    variable already set wins: the environment is where credentials are meant to be."""
    split = _split(uri) if uri else None
    if split is None:
        return uri
    parts, user, password = split
    if user:
        os.environ.setdefault(USERNAME_VAR, user)
    if password:
        os.environ.setdefault(PASSWORD_VAR, password)
    return urlunsplit(parts)
