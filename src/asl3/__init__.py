"""asl3: ASL-3 deployment and security safeguards.

Public API::

    from asl3 import Guard
    guard = Guard.load()
    guard.check_input("text").blocked
"""

from asl3.classify.bundle import load_bundle
from asl3.constitution import Constitution
from asl3.guard import Exemption, Guard, Principal, Verdict

__all__ = ["Constitution", "Exemption", "Guard", "Principal", "Verdict", "load_bundle"]
__version__ = "0.1.0"
