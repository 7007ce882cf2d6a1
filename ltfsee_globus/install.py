"""The files a site installs beside the package: systemd units for the
installed layout, the sudoers rule, an environment file template.

Rendered from the templates in ltfsee_globus/units/ (shipped in the wheel),
so the units point at the prefix the package is installed in and the
sudoers rule at the STATE_DIR the service writes its recall lists under.
`ltfsee-globus install-units` writes them; docs/install.md says the rest.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Where things are on the tape host."""

    prefix: str = sys.prefix  # the virtual environment the package is installed in
    state_dir: str = "/var/lib/ltfsee-globus"
    env_file: str = "/etc/ltfsee-globus/env"
    user: str = "ltfsee"
    eeadm: str = "/opt/ibm/ltfsee/bin/eeadm"
    after: str = "gpfs.service"  # units the service is ordered after (space-separated)


#: What is written where (relative to the destination root), from which
#: template, with which mode.
FILES = (
    ("etc/systemd/system/ltfsee-globus.service", "ltfsee-globus.service", 0o644),
    ("etc/systemd/system/ltfsee-globus-stager.service", "ltfsee-globus-stager.service", 0o644),
    ("etc/sudoers.d/ltfsee-globus", "sudoers", 0o440),
    ("etc/ltfsee-globus/env.example", "env.example", 0o640),
)


#: The layout's paths and the install-units options that set them.
OPTIONS = {
    "prefix": "--prefix",
    "state_dir": "--state-dir",
    "env_file": "--env",
    "eeadm": "--eeadm",
}


def _template(name: str) -> str:
    return files("ltfsee_globus").joinpath("units", name).read_text(encoding="utf-8")


def render(layout: Layout) -> dict[str, str]:
    """Each file's path (relative) and text for `layout`."""
    for name, option in OPTIONS.items():
        if not os.path.isabs(getattr(layout, name)):
            raise ValueError(f"{option} must be an absolute path")
    hardening = _template("hardening.conf").rstrip("\n")
    values = {
        "@PREFIX@": layout.prefix.rstrip("/"),
        "@STATE_DIR@": layout.state_dir.rstrip("/"),
        "@ENV_FILE@": layout.env_file,
        "@USER@": layout.user,
        "@EEADM@": layout.eeadm,
        "@AFTER@": layout.after,
        "@HARDENING@": hardening,
    }
    out = {}
    for path, template, _mode in FILES:
        text = _template(template)
        for key, value in values.items():
            text = text.replace(key, value)
        out[path] = text
    return out


def write(root: Path, layout: Layout) -> list[Path]:
    """Render into the tree at `root` (/ on the tape host); the files written.
    An existing environment file is never touched (only env.example is)."""
    written = []
    texts = render(layout)
    for path, _template, mode in FILES:
        text = texts[path]
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(mode)
        os.replace(tmp, target)
        written.append(target)
    return written
