"""Record real traffic as contract cases, and replay cases against the current code.

- ``recorder``: ``recording_app(settings, out_dir)``, the shim wired to write each legacy call
  it serves as a case in the format of fixtures/ (``redmart-shim record``);
- ``scrub``: the rules that keep secrets and personal values out of those cases;
- ``replay``: a stand-in platform that answers a case's recorded exchanges, checking signatures;
- ``verify``: runs a directory of cases against the shim and reports every difference
  (``redmart-shim verify``);
- ``cases``: the case format itself, shared by all of the above and the contract tests.

Dependency rule: this package uses the shim from outside (``create_app``, its settings, its
public seams); nothing in the serving path imports it, so normal serving never records.
"""

from shim.record.recorder import Recorder, recording_app
from shim.record.verify import CaseResult, Difference, verify

__all__ = ["CaseResult", "Difference", "Recorder", "recording_app", "verify"]
