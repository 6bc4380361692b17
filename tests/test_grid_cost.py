"""`locallearn bench --grid` (issue 18): every distinct network x loss of the selected
cells timed once on synthetic inputs of its dataset's shape, and the measured table
(recipe/gridcost.py) with seconds per epoch and hours per cell and in all. Run here on shrunken
networks (--scale) for 2 steps on the CPU: the plumbing and the arithmetic are tested,
never a speed."""
from __future__ import annotations

import json
import math

import pytest

from conftest import CELLS_TSV as CELLS
from locallearn.recipe import gridcost
from locallearn.bench.gridbench import cli_grid_bench
from locallearn.recipe.cells import read_cells
from locallearn.errors import ConfigError
from locallearn.recipe.specs import SPECS

SELECT = ["mnist-mlp-pred", "fmnist-mlp-pred", "stl10-vgg8b-predsim", "stl10-vgg8b-cutout-predsim",
          "cifar100-vgg8b-sim"]


@pytest.mark.slow
def test_grid_times_each_distinct_network_once(tmp_path, capsys):
    assert cli_grid_bench(["--cells", str(CELLS), "--select", *SELECT, "--scale", "0.05", "--steps", "2", "--device", "cpu",
                     "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = gridcost.table_path(tmp_path, "cpu", "fp32")
    table = json.loads(path.read_text())
    assert f"# wrote {path} (scale 0.05: a test, not used for runtimes)" in out
    assert table["precision"] == "fp32" and table["scale"] == 0.05 and table["torch"] and table["date"]
    assert table["device"].startswith("CPU") and table["batch_size"] == 128
    cells = table["cells"]
    assert sorted(cells) == sorted(SELECT)
    # the MNIST family shares one shape: one timing for both mlp pred cells; cutout is not timed apart
    assert table["networks"] == table["networks_timed"] == 3
    assert cells["fmnist-mlp-pred"]["timed_as"] == "mnist-mlp-pred"
    assert cells["stl10-vgg8b-cutout-predsim"]["timed_as"] == "stl10-vgg8b-predsim"
    rows = {r["cell"]: r for r in read_cells(CELLS)}
    for name, e in cells.items():
        spec = SPECS[rows[name]["dataset"]]
        assert e["seconds_per_step"] > 0 and e["seconds_per_test_image"] > 0
        assert e["seconds_per_epoch"] == pytest.approx(math.ceil(spec.train_size / 128) * e["seconds_per_step"]
                                                       + spec.test_size * e["seconds_per_test_image"])
        assert e["hours"] == pytest.approx(int(rows[name]["epochs"]) * e["seconds_per_epoch"] / 3600)
    assert table["total_hours"] == pytest.approx(sum(e["hours"] for e in cells.values()))
    assert "| Dataset | Cells | Measured CPU-hours (1 seed) |" in out
    assert f"| **all** | 5 | **{table['total_hours']:.1f}** |" in out
    assert gridcost.load_table(path) is None                   # a scaled test table never sets runtimes
    table["scale"] = 1
    assert gridcost.cell_hours(table, rows["stl10-vgg8b-predsim"], epochs=2, max_train=1280) == pytest.approx(
        2 * (10 * cells["stl10-vgg8b-predsim"]["seconds_per_step"]
             + 8000 * cells["stl10-vgg8b-predsim"]["seconds_per_test_image"]) / 3600)
    assert gridcost.cell_hours(table, rows["mnist-mlp-sim"]) is None


def test_grid_limit_and_bad_selection(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert cli_grid_bench(["--cells", str(CELLS), "--select", "mnist-mlp-*", "--limit", "1", "--scale", "0.02", "--steps", "1",
                     "--device", "cpu", "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["networks_timed"] == 1 and table["networks"] == 4 and list(table["cells"]) == ["mnist-mlp-backprop"]
    with pytest.raises(ConfigError, match="--select nope: matches no cell"):
        cli_grid_bench(["--cells", str(CELLS), "--select", "nope", "--out", str(out)])
