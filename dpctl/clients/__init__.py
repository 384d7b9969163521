"""Outbound HTTP from the controller to Pods: the requester stub's SPI, the inference server, and
the launcher's API.

Owns sessions, timeouts, response validation and error wording. Imports only the wire names
from :mod:`dpctl.api`; knows nothing about reconciliation.
"""

from dpctl.clients.http import HttpCallError, HttpClient, HttpObserver, HttpResult
from dpctl.clients.inference import InferenceClient, SleepModeUnavailable
from dpctl.clients.launcher import LauncherClient, launcher_url
from dpctl.clients.requester import RequesterClient

__all__ = [
    "HttpCallError",
    "HttpClient",
    "HttpObserver",
    "HttpResult",
    "InferenceClient",
    "LauncherClient",
    "RequesterClient",
    "SleepModeUnavailable",
    "launcher_url",
]
