"""The pictures: PNGs of the sizes and panels their data asks for."""
import io

import matplotlib.image as mpimg

from embedfactory.report import plots


def image(png: bytes):
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return mpimg.imread(io.BytesIO(png), format="png")


def test_loss_scores_and_attribute_pictures():
    loss = image(plots.loss_curve([1.0 / (1 + i) for i in range(200)]))
    assert loss.shape[1] == 6 * plots.DPI and loss.shape[0] > 300
    rows = [{"set": "cranfield", "metric": "ndcg@10", "base": 0.38, "fine_tuned": 0.41},
            {"set": "stsb-test", "metric": "spearman", "base": 0.82, "fine_tuned": 0.82}]
    assert image(plots.scores_chart(rows)).shape[1] == round((1.6 * 2 + 2) * plots.DPI)
    share = {"reference": 0.5, "drawn": 0.4, "kept": 0.3}
    attributes = {"sts": {"unit": {"sentence": share, "phrase": share}},
                  "retrieval": {"query_type": {"extremely long-tail": share}, "clarity": {"clear": share}}}
    wide = image(plots.attribute_chart(attributes))
    assert wide.shape[1] == round(3 * 4.2 * plots.DPI) and wide.shape[0] == round(2.6 * plots.DPI)  # 3 panels, 1 row
    assert image(plots.attribute_chart({})).shape[0] == round(1.5 * plots.DPI)
    # distinct pictures for distinct data
    assert plots.scores_chart(rows) != plots.scores_chart([{**rows[0], "fine_tuned": 0.2}, rows[1]])
