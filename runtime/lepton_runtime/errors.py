"""The Lepton error hierarchy, shared by the runtime and the compiler.

Every error a user can trigger is a ``LeptonError`` whose message names the thing at fault
(file, member, input, node, op) and says what to do about it.
"""


class LeptonError(Exception):
    """Root of every error raised by Lepton on bad input or bad state."""


class ArtifactError(LeptonError):
    """An artifact file is missing, malformed, tampered with or unsupported."""


class ArtifactIntegrityError(ArtifactError):
    """A member's sha256 does not match the manifest, or a member is missing or extra."""


class UnsupportedArtifactError(ArtifactError):
    """The artifact's format version, ABI, platform or CPU features are not supported here."""


class UnsafeArchiveError(ArtifactError):
    """The archive contains a member that must never be extracted (absolute, '..', link, device)."""


class InputError(LeptonError):
    """Inputs passed to a model do not match its signature (count, name, shape or dtype)."""


class KernelError(LeptonError):
    """A kernel reported a failure while running."""
