"""The fidelity report states the verdicts that its numbers support, and no others."""

import json

from benchmarks import fidelity

GRID = [4, 8, 32, 64]


def _results(images: int, accuracy: list[float], ann: float = 0.93) -> dict:
    variant = {"label": "DNI + second stage", "accuracy": accuracy,
               "agreement": [0.9] * len(accuracy)}
    return {"timesteps": GRID, "test": {"images": images}, "machine": fidelity.machine(),
            "models": {"vgg": {"ann_accuracy": ann,
                               "variants": {fidelity.DEFAULT_VARIANT: variant}}}}


def _peers(images: int, accuracy: list[float]) -> dict:
    return {"test": {"images": images}, "models": {"vgg": {"modes": {
        "max": {"accuracy": {str(t): a for t, a in zip(GRID, accuracy)}}}}}}


def _verdicts(full, peers) -> list[str]:
    lines = fidelity.targets_section(full, peers)
    return [line for line in lines if line.startswith("- ")]


def test_gaps_are_checked_against_the_targets():
    # Gaps: 2.5 (T=4, target 3), 1.5 (T=8, target 1), 0.1 (T=32, target 0.2).
    verdicts = _verdicts(_results(10_000, [0.905, 0.915, 0.929, 0.93]), None)
    assert any("T=4: gap 2.50" in v and v.endswith("met") for v in verdicts)
    assert any("T=8: gap 1.50" in v and "missed by 0.50" in v for v in verdicts)
    assert any("T=32: gap 0.10" in v and v.endswith("met") for v in verdicts)


def test_the_peer_is_beaten_only_if_it_is_at_every_t():
    full = _results(10_000, [0.90, 0.92, 0.93, 0.93])
    ahead = _verdicts(full, _peers(10_000, [0.1, 0.5, 0.92, 0.929]))
    assert any("ahead at every T" in v and "smallest lead 0.10 points (T=64)" in v
               for v in ahead)
    behind = _verdicts(full, _peers(10_000, [0.1, 0.5, 0.94, 0.90]))
    assert any("not ahead at every T" in v and "(T=32)" in v for v in behind)


def test_a_peer_measured_on_other_images_is_not_compared():
    lines = fidelity.targets_section(_results(10_000, [0.9] * 4), _peers(1_000, [0.1] * 4))
    text = "\n".join(lines)
    assert "not compared" in text and "SpikingJelly ann2snn" not in text
    assert not any("against SpikingJelly" in line for line in lines)


def test_report_is_written_from_the_json_files(tmp_path):
    (tmp_path / "fidelity_10k.json").write_text(json.dumps(_results(10_000, [0.9] * 4)))
    (tmp_path / "spikingjelly.json").write_text(json.dumps(_peers(10_000, [0.5] * 4)))
    fidelity.write_report(tmp_path)
    text = (tmp_path / "fidelity_tables.md").read_text()
    assert "| ours minus the better SpikingJelly mode | 40.00 | 40.00 | 40.00 | 40.00 |" in text
