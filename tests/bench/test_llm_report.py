"""The LLM benchmark's report, rendered from the committed result: every row in the Markdown and HTML tables, the
heat map and learning curves embedded, the provenance shown; an existing report folder is replaced whole."""
import json
from pathlib import Path

from taskfuse.bench.llm_report import learning_curves, markdown, write_llm_report

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bench-llm" / "result.json"


def test_the_llm_report_shows_every_row_its_figures_and_where_it_came_from(tmp_path):
    result = json.loads(RESULT.read_text())
    write_llm_report(result, tmp_path / "report")
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"result.json", "results.md", "normalised.png", "learning.png", "report.html"} <= files
    page = (tmp_path / "report" / "report.html").read_text()
    for name in result["rows"]:
        assert name.replace("'", "&#x27;") in page and name in markdown(result)
    assert page.count("data:image/png;base64,") == 2 and result["code"]["commit"] in page
    assert json.loads((tmp_path / "report" / "result.json").read_text()) == result
    curves = learning_curves(result)
    assert list(curves["MoE router tuning"]) == ["next-token loss on the train answers", "routing loss"]
    assert curves["MoE router tuning"]["routing loss"] == result["moe_tuning"]["routing_losses"]
    (tmp_path / "report" / "normalised.png").unlink()
    result["learned"], result["moe_tuning"] = {}, {}
    write_llm_report(result, tmp_path / "report")  # replaced whole: no curves now, the heat map back
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert "learning.png" not in files and "normalised.png" in files
