from __future__ import annotations

from pccheck.demo.lossfile import LossFile


def test_rows_round_trip_exactly_and_resume_cuts_back(tmp_path):
    path = tmp_path / "loss.csv"
    f = LossFile(path, resume_step=None)
    values = [0.1, 1 / 3, 2.0000000000000004, 5e-324]
    for i, v in enumerate(values, 1):
        f.append(i, v)
    f.close()
    rows = path.read_text().splitlines()
    assert rows[0] == "step,loss" and [float(r.split(",")[1]) for r in rows[1:]] == values
    LossFile(path, resume_step=2).close()
    assert path.read_text() == "step,loss\n1,0.1\n2,0.3333333333333333\n"


def test_partial_last_line_is_dropped(tmp_path):
    path = tmp_path / "loss.csv"
    path.write_text("step,loss\n1,0.5\n2,0.2")
    LossFile(path, resume_step=5).close()
    assert path.read_text() == "step,loss\n1,0.5\n"
