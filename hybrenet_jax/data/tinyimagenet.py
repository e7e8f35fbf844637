"""TensorFlow-datasets builder for TinyImageNet, prepared from a manual download.

Importing this module imports ``tensorflow_datasets`` and registers the builder under the name
``hybrenet_tiny_imagenet`` (our own name, so it cannot clash with a builder tfds may add).
Use it through ``hybrenet_jax.data.load_dataset("tinyimagenet", ...)``, or directly::

    builder = TinyImagenet(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from hybrenet_jax.data import tinyimagenet_files as files
from hybrenet_jax.dataset_info import DATASETS

_INFO = DATASETS["tinyimagenet"]


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """TinyImageNet-200: 64x64 RGB, 200 classes, 100,000 train / 10,000 validation images."""

    name = "hybrenet_tiny_imagenet"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (train and validation splits)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {files.ARCHIVE_NAME} (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
        f"and put it, or its extracted folder {files.FOLDER_NAME}/, in the manual dir. "
        f"Expected: {files.LAYOUT}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        size = _INFO.input_size
        return self.dataset_info_from_configs(
            description="TinyImageNet-200 (labels index the sorted wnids).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "label": tfds.features.ClassLabel(num_classes=_INFO.classes),
                    "id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://cs231n.stanford.edu/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        tree = files.open_release(dl_manager.manual_dir)
        files.index_release(tree)  # fail early, with a clear message, before writing anything
        return {
            "train": self._generate_examples(tree, "train"),
            "validation": self._generate_examples(tree, "validation"),
        }

    def _generate_examples(self, tree, split: str):
        for rel, image, label in files.iter_examples(tree, split):
            yield rel, {"image": image, "label": label, "id": rel}
