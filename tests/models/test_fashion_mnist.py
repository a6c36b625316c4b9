from PIL import Image

from models.data.fashion_mnist import CATEGORIES
from models.data.folder import load_folder


def test_export_writes_an_image_folder_of_real_photos(fmnist_small):
    train = load_folder(fmnist_small / "train")
    assert set(train.categories) == set(CATEGORIES)
    assert len(train.samples) == 300
    with Image.open(train.samples[0].path) as picture:
        assert picture.size == (28, 28) and picture.mode == "L"
        darkest, brightest = picture.getextrema()
        assert brightest - darkest > 50  # a photo, not a blank
    assert len(load_folder(fmnist_small / "test", per_class=5).samples) == 50


def test_texts_are_joined_by_file_name(fmnist_small, tmp_path):
    first = sorted((fmnist_small / "train" / "Bag").iterdir())[0]
    texts = tmp_path / "texts.csv"
    texts.write_text(f"file,title,description\n{first.name},Leather bag,Brown\nBag/{first.name},Tote,Roomy\n")
    sample = next(s for s in load_folder(fmnist_small / "train", texts).samples if s.path == first)
    assert (sample.title, sample.description) == ("Tote", "Roomy")  # the relative path wins over the bare name
