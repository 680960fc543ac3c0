"""The speed benchmark's deep-network part: skipped cleanly without its data, and the
figures of its table derived from what the workers measure."""

from benchmarks import speed


def test_a_deep_network_without_its_files_is_skipped_with_a_line_saying_how_to_make_them(
        tmp_path, capsys):
    (tmp_path / "lite.onnx").write_bytes(b"")  # its views are missing
    assert speed._deep(["lite"], tmp_path, views=2, thread_counts=[1], repeat=1,
                       scratch=tmp_path) is None
    out = capsys.readouterr().out
    assert "lite: skipped" in out and "lite_calib.npz" in out and "lite_test.npz" in out
    assert "lite.onnx," not in out  # the file that is there is not named missing
    assert "tools/deep_models/export.py" in out


def test_deep_row_divides_by_steps_and_views():
    # 4 views: onnxruntime's 32 passes take 1.28 s, ours 12.8 s at T=32; per image, 2 G
    # synaptic ops over 32 steps and 100 M MACs per pass.
    record = {"input": [3, 8, 8], "views": 4,
              "ort": {"seconds": 1.28, "threads": 1, "peak_rss_mb": 100.0},
              "snn": {"seconds": {"32": 12.8}, "threads": 2, "synaptic_ops_per_image": 2e9,
                      "ann_macs_per_image": 1e8, "mean_firing_rate": 0.25},
              "memory": {"run_32": {"peak_rss_mb": 300.0}}}
    header, _, row = speed.deep_rows({"models": {"net": record}})
    cells = dict(zip([c.strip() for c in header.split("|")[1:-1]],
                     [c.strip() for c in row.split("|")[1:-1]]))
    assert cells["input"] == "3x8x8" and cells["views"] == "4"
    assert cells["ORT 1 pass / image"] == "10.0 ms"  # 1.28 s / (32 x 4)
    assert cells["ours per image-step"] == "100.00 ms"  # 12.8 s / (32 x 4)
    assert cells["ours / ORT x32 (target <= 1)"] == "**10.00**"
    assert cells["ops / MAC (T=32)"] == "0.625"  # 2 G / (32 x 100 M)
    assert cells["ours: G synaptic ops/s"] == "0.62"  # 2 G x 4 / 12.8 s
    assert cells["ORT: G MAC/s"] == "10.00"  # 100 M x 32 x 4 / 1.28 s
    assert cells["peak RSS ours T=32"] == "300 MB"
