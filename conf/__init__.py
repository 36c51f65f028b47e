"""The Hydra configs, installed as the package `rlhf.conf` (pyproject.toml `package-dir`) so a wheel
carries them: `rlhf` reads them as `pkg://rlhf.conf` from any directory. No code lives here."""
