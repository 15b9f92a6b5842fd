"""The stage benchmark's profile summary (``benchmarks/stages.py``): py-spy's raw stacks put
in the right library and counted once per project function on a stack."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "stages.py"


@pytest.fixture(scope="module")
def stages() -> ModuleType:
    sys.path.insert(0, str(PATH.parent))
    try:
        spec = importlib.util.spec_from_file_location("benchmark_stages", PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(PATH.parent))
    return module


def test_samples_go_to_the_library_nearest_the_leaf_and_functions_count_once(
    stages: ModuleType, tmp_path: Path
) -> None:
    raw = tmp_path / "proofing.raw"
    raw.write_text(
        "\n".join(
            [
                # an upload: the leaf is in httpcore, under two project frames
                "worker (stages.py:1);_proof_one (mail_pipeline/services/proofing.py:232);"
                "HttpApi.request (mail_pipeline/integrations/http.py:196);"
                "Client.send (httpx/_client.py:914);read (httpcore/_sync/http11.py:10) 3",
                # a recursive project frame is one function, counted once
                "worker (stages.py:1);_proof_one (mail_pipeline/services/proofing.py:225);"
                "_proof_one (mail_pipeline/services/proofing.py:240);"
                "execute (sqlalchemy/engine/base.py:1)  1",
                "not a stack line",
            ]
        )
    )

    lines = stages.profile_summary(raw)

    assert lines[0] == "4 busy samples"
    assert "| HTTP client (httpx, httpcore, h11) | 75% |" in lines
    assert "| database (SQLAlchemy, drivers) | 25% |" in lines
    assert "| `_proof_one (mail_pipeline/services/proofing.py)` | 100% |" in lines
    assert "| `HttpApi.request (mail_pipeline/integrations/http.py)` | 75% |" in lines


def test_an_empty_profile_says_so(stages: ModuleType, tmp_path: Path) -> None:
    raw = tmp_path / "empty.raw"
    raw.write_text("")
    assert stages.profile_summary(raw) == ["(no samples)"]
