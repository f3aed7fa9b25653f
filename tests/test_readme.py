"""The README's "Use the released artifacts" section: every code block runs on its own, as written.

Each block runs alone in a fresh interpreter (nothing carried over from the block before), from a folder holding the
paths the section names (the bundled models and metric, a built corpus as ``outputs/drr``, ``chest_xray.png``). A block
that does not import ``chexanatomy`` runs as a Hub user, with our packages blocked (``test_hub_user.hub_user``).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_hub_user import hub_user

from chexanatomy.examples import real_radiographs

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Use the released artifacts"
LINKED = ("chexanatomy/assets/models/tiny_vlm", "chexanatomy/assets/models/unet", "eval/metrics/anatomy_segmentation")


def section_blocks() -> list[str]:
    """The ``python`` blocks of the README section ``SECTION`` (up to the next ``## `` heading)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


@pytest.fixture(scope="module")
def reader_dir(tmp_path_factory, phantom_corpus) -> Path:
    cwd = tmp_path_factory.mktemp("readme")
    for rel in LINKED:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).symlink_to(ROOT / rel, target_is_directory=True)
    (cwd / "outputs").mkdir()
    (cwd / "outputs" / "drr").symlink_to(phantom_corpus, target_is_directory=True)
    real_radiographs()["00000001_000"].save(cwd / "chest_xray.png")
    return cwd


def test_the_section_has_the_libraries_the_decoder_and_the_helpers():
    blocks = section_blocks()
    assert len(blocks) == 3
    assert "from seg_decoder import SegDecoder" in blocks[1] and "AnswerContract.for_prompts" in blocks[1]


@pytest.mark.parametrize("index", range(3))
def test_each_block_of_the_section_runs_alone(reader_dir, index):
    block = section_blocks()[index]
    if re.search(r"^\s*(from|import) chexanatomy", block, flags=re.M):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "-c", block], cwd=reader_dir, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return
    out = hub_user(block, reader_dir)
    if "SegDecoder" in block:  # one valid mask at the image's size per prompted structure
        h, w = real_radiographs()["00000001_000"].size[::-1]
        lines = [line for line in out.splitlines() if line.strip()]
        assert [line.split(" True ")[0] for line in lines] == ["heart", "left lung"], out
        assert all(line.endswith(f"({h}, {w})") for line in lines), out
