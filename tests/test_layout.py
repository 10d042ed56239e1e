"""The layout the project promises: the model file holds the model only, the data module needs no torch, the
repository cites no file it lacks, and the model's forward reads no values (so it runs on the meta device)."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import siglip_min as sm

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path):
    """Top-level names of every module a Python file imports (import x / from x import y)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_model_file_imports_no_tokenizer_preprocessing_or_command_line():
    assert not imported_modules(REPO / "siglip_min.py") & {"tokenizer", "preprocess", "argparse", "cli", "shapes",
                                                           "PIL", "sentencepiece"}
    code = "import sys, siglip_min; print(sorted({'tokenizer', 'preprocess', 'cli', 'shapes'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_shapes_data_needs_no_torch():
    code = "import sys, shapes; assert 'torch' not in sys.modules, 'shapes.py imported torch'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_repository_cites_no_document_it_lacks():
    """Every *.md document that a file of the repository mentions is a file of the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    documents = {Path(name).name for name in tracked if name.endswith(".md")}
    cited = {(name, document) for name in tracked if Path(name).suffix in (".py", ".md", ".ipynb", ".txt", ".ini")
             for document in re.findall(r"[\w.-]+\.md\b", (REPO / name).read_text(encoding="utf-8"))}
    assert {"README.md"} <= {document for _, document in cited}
    assert not {(name, document) for name, document in cited if document not in documents}


def test_forward_reads_no_values():
    """Every public forward runs on the meta device, where reading a value (.item(), a comparison in an if, .min())
    fails: so nothing in it waits for a GPU or breaks torch.compile's graph."""
    config = sm.SiglipConfig(text_config=sm.SiglipTextConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                                             num_hidden_layers=1, num_attention_heads=4,
                                                             max_position_embeddings=8, projection_size=48),
                             vision_config=sm.SiglipVisionConfig(hidden_size=48, intermediate_size=64,
                                                                 num_hidden_layers=1, num_attention_heads=4,
                                                                 image_size=32, patch_size=8))
    with torch.device("meta"):
        ids, mask = torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)
        pixels, larger = torch.zeros(3, 3, 32, 32), torch.zeros(3, 3, 48, 40)
        for attn in sm.ATTN_IMPLEMENTATIONS:
            model = sm.SiglipModel(config, attn)
            out = model(ids, pixels, attention_mask=mask, return_loss=False)
            assert out.logits_per_image.shape == (3, 2) and out.logits_per_image.is_meta
            assert model.get_image_features(larger, interpolate_pos_encoding=True).shape == (3, 48)
            assert model.get_text_features(ids, mask).shape == (2, 48)
            assert sm.SiglipClassifier(config, attn)(pixels).shape == (3, 2)


def test_checks_stay_in_the_entry_points():
    """The one value check, token ids in the vocabulary, is made by embed_texts on the NumPy ids."""
    sm.check_token_ids(np.array([[0, 49]]), 50)
    for bad in ([[0, 50]], [[-1, 3]]):
        with pytest.raises(sm.InputError, match=r"input_ids must lie in \[0, 50\)"):
            sm.check_token_ids(np.array(bad), 50)
