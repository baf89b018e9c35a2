"""Exceptions with messages meant for people: every one names what was wrong and where."""

from __future__ import annotations


class Asl3Error(Exception):
    """Base class: the CLI prints these as a one-line reason and exits with code 2."""


class ConstitutionError(Asl3Error):
    """A constitution file is missing, unreadable, not YAML, or fails the schema."""


class DatasetError(Asl3Error):
    """A dataset file (JSONL) is missing, malformed, or has a row that fails the schema."""


class BundleError(Asl3Error):
    """A model bundle is missing, incomplete, or fails its SHA-256 manifest check."""


class StoreError(Asl3Error):
    """The event and key store cannot be opened or used (bad URL, database unreachable)."""


class SecurityError(Asl3Error):
    """An identity, sealed box or encrypted file is unreadable, forged or tampered with."""


class IdentityError(SecurityError):
    """An identity file is missing, malformed, too widely readable, or its passphrase is wrong."""


class VaultError(SecurityError):
    """A vault action was refused: it names the request, file or approval that was wrong."""


class ChangeError(SecurityError):
    """A change to safeguard settings was refused, or the approved settings do not verify: it
    names the change, file or approval that was wrong."""


class AllowlistError(SecurityError):
    """An allowlist action was refused, or the approved settings the allowlist comes from do not
    verify (a tampered change history, an untrusted roster)."""


class AuditError(SecurityError):
    """An audit log or checkpoint is missing, unreadable or malformed, or an entry is refused."""


class EgressError(Asl3Error):
    """An egress setting or unit is malformed, or an egress action (unblock, rules) was refused."""
