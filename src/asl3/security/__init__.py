"""Weight security: identities, sealed boxes, Shamir shares, chunked encryption, the vault,
the signed audit log, change management, binary allowlisting and the socket reader.

Cryptography from `cryptography` (AES-GCM, Ed25519, X25519, HKDF) and PyNaCl (libsodium
Ed25519 verification for large audit logs); see docs/THREAT_MODEL.md for what each control
stops and what it does not.
"""
