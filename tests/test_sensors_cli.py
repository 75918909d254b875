"""``eocube sensors`` commands on real material."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli.sensors import app


def test_qa_command_reports_the_scene_cloud_share(shared_dir):
    raster = next((shared_dir / "data/landsat-c2l2/LC08_L2SP_005009_20150710").glob("*_QA_PIXEL.TIF"))
    result = CliRunner().invoke(app, ["qa", "landsat-c2l2-sr", "QA_PIXEL", str(raster)])
    assert result.exit_code == 0, result.output
    assert "landsat_c2_qa_pixel" in result.output
    cloud_line = next(line for line in result.output.splitlines() if "│ cloud " in line)
    assert "54.67 %" in cloud_line  # MTL CLOUD_COVER 54.65


def test_list_show_and_bad_names():
    runner = CliRunner(env={"COLUMNS": "200"})
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "sentinel-2-l2a" in listed.output and "hls2-s30" in listed.output
    shown = runner.invoke(app, ["show", "landsat-c2-l2"])
    assert shown.exit_code == 0 and "2.75e-05" in shown.output and "qa_pixel" in shown.output
    bad = runner.invoke(app, ["show", "sentinel-3-olci"])
    assert bad.exit_code == 2 and "no sensor profile" in bad.output and "'sentinel-3-olci'" in bad.output
