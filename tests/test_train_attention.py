"""After a short stage-1 training on the tiny dataset, attention gives the planted noisy web
images (irrelevant results, wrong labels: the dataset card's ground truth) less weight than
the clean ones."""

from conftest import tiny_train_flags
from webda.attention_weights import web_item_weights
from webda.cli import main
from webda.data.prepare import prepare


def test_train_attention_downweights_planted_noise(tiny_dataset, tiny_card, tiny_train_cache, tmp_path):
    out = tmp_path / "run"
    flags = tiny_train_flags(tiny_dataset, out, tiny_train_cache)
    assert main(["train-image", *flags, "--steps", "40", "--batch-image", "16", "--batch-frame", "16",
                 "--batch-target", "16", "--no-da"]) == 0
    prepared = prepare(tiny_dataset, tiny_train_cache, show_progress=False)
    weights = web_item_weights(out / "last.pt", prepared.web_images, prepared.target_frames("train"))
    noise = {str(tiny_dataset / item["path"]): item["noise"] for item in tiny_card["items"]
             if item["domain"] == "web_image"}
    kinds = [noise[str(item.path)] for item in prepared.web_images]
    clean = weights[[k == "clean" for k in kinds]]
    noisy = weights[[k in ("irrelevant", "mislabeled") for k in kinds]]
    assert len(noisy) >= 5 and len(clean) >= 20
    assert noisy.mean() < clean.mean(), (noisy.mean(), clean.mean())
