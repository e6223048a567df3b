"""Key Vault-compatible secrets server (developer tooling): ``python -m tools.emulators.keyvault``."""

from tools.emulators.keyvault.server import KeyVaultEmulator

__all__ = ["KeyVaultEmulator"]
