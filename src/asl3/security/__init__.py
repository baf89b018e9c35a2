"""Weight security: identities, sealed boxes, Shamir shares, chunked encryption, the vault.

Depends only on `cryptography` (DESIGN section 2). Audit log, change management and
allowlisting are not built yet.
"""
