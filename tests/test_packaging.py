"""What `pip install .` ships: the three layers (the browser console's static files in `app/console/`) and
`ops/nats.conf` at the top level, and nothing that needs the source checkout (the embedded nats-server is
configured from the shipped `ops/nats.conf`)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_plain_install_ships_the_layers_and_configures_nats_from_ops(tmp_path: Path) -> None:
    built = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", built, ROOT],
        check=True,
        capture_output=True,
    )
    installed = tmp_path / "site-packages"
    zipfile.ZipFile(next(built.glob("vocalis-*.whl"))).extractall(installed)
    top_level = {path.name for path in installed.iterdir() if not path.name.endswith(".dist-info")}
    assert top_level == {"app", "domain", "handlers", "ops"}
    console = {path.name for path in (installed / "app" / "console").iterdir()}  # the browser console's files
    assert {"index.html", "console.js", "transports.js", "audio.js", "capture-worklet.js", "console.css"} <= console
    assert (
        "console_scripts]\nvocalis = app.entry:main" in next(installed.glob("*.dist-info/entry_points.txt")).read_text()
    )

    # The installed copy, ahead of the checkout on the path, finds its own config.
    found = subprocess.run(
        [sys.executable, "-c", "from app import runner; import app; print(app.__file__); print(runner.nats_config())"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert found[0].startswith(str(installed)) and found[1].startswith(str(installed))
    assert Path(found[1]).read_text() == (ROOT / "ops" / "nats.conf").read_text()
