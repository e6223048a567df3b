"""Key Vault-compatible secrets server (developer tooling): ``python -m tools.keyvault_emulator``."""

from tools.keyvault_emulator.server import KeyVaultEmulator

__all__ = ["KeyVaultEmulator"]
