"""Every MedViLL head trains on the batches the task collators build (tiny config, demo data)."""
import pytest
import torch

from medvlp_hf.data import (
    DEMO_ANSWERS, ClassificationCollator, LabelConditionedNegatives, PreTrainingCollator, ReportGenerationCollator,
    RetrievalPairCollator, VQACollator, load_demo,
)
from medvlp_hf.models.medvill import (
    MedViLLConfig, MedViLLForImageTextClassification, MedViLLForPreTraining, MedViLLForReportGeneration,
    MedViLLForRetrieval, MedViLLForVQA,
)
from tests.test_data_support import medvill_processor


@pytest.fixture(scope="module")
def demo():
    return load_demo(num_train=8, num_test=0, image_size=64)["train"]


@pytest.mark.parametrize(
    "head, make_collator, config_overrides",
    [
        (MedViLLForVQA, lambda p, d: VQACollator(p, DEMO_ANSWERS),
         {"id2label": dict(enumerate(DEMO_ANSWERS))}),
        (MedViLLForPreTraining,
         lambda p, d: PreTrainingCollator(p, LabelConditionedNegatives(d), mask_first_if_none=True), {}),
        (MedViLLForReportGeneration, lambda p, d: ReportGenerationCollator(p), {}),
        (MedViLLForRetrieval, lambda p, d: RetrievalPairCollator(p, LabelConditionedNegatives(d)), {}),
        (MedViLLForImageTextClassification, lambda p, d: ClassificationCollator(p), {"num_labels": 14}),
    ],
)
def test_head_trains_on_collator_batch(demo, head, make_collator, config_overrides):
    torch.manual_seed(0)
    config = MedViLLConfig.from_preset("tiny", **config_overrides)
    model = head(config)
    batch = make_collator(medvill_processor(image_size=config.image_size), demo)([demo[i] for i in range(4)])
    output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
