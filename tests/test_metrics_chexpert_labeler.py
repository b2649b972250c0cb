"""Rule-based CheXpert labeler: negation / uncertainty / mention cases, aggregation, phrase-list agreement."""
import filecmp

import numpy as np
import pytest

from medvlp_hf.metrics import CHEXPERT_OBSERVATIONS
from medvlp_hf.metrics import CheXpertRuleLabeler
from medvlp_hf.metrics.chexpert_labeler import PHRASES_DIR
from medvlp_hf.metrics.chexpert_labeler import clean_report
from medvlp_hf.metrics.chexpert_labeler import split_sentences
from medvlp_hf.metrics.chexpert_rules import ALWAYS_UNCERTAIN_MENTIONS

# Expected labels follow the CheXpert labeler's rules (NegBio patterns, aggregation, No Finding).
# DEVELOPMENT_CASES were used while writing the rules; HELD_OUT_CASES were written before the rules
# were first run on them (all 25 agreed on that first run).
DEVELOPMENT_CASES = [
    ('PA and lateral views of the chest demonstrate low lung volumes. No focal consolidation, pleural effusion, or pneumothorax. The cardiomediastinal silhouette is normal.', {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ('Moderate cardiomegaly with mild pulmonary edema. Small bilateral pleural effusions.', {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1}),
    ('Endotracheal tube terminates 4 cm above the carina. Nasogastric tube courses below the diaphragm.', {"Support Devices": 1, "No Finding": 1}),
    ('Right lower lobe opacity concerning for pneumonia.', {"Lung Opacity": 1, "Pneumonia": -1}),
    ('Bibasilar atelectasis. No pneumothorax.', {"Atelectasis": 1, "Pneumothorax": 0}),
    ('Interval resolution of the right pleural effusion.', {"Pleural Effusion": 0, "No Finding": 1}),
    ('Heart size is mildly enlarged.', {"Cardiomegaly": 1}),
    ('There is no evidence of pneumothorax or pleural effusion.', {"Pneumothorax": 0, "Pleural Effusion": 0, "No Finding": 1}),
    ('Possible small left pleural effusion.', {"Pleural Effusion": -1}),
    ('Left basilar opacity may reflect atelectasis or pneumonia.', {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1}),
    ('Median sternotomy wires and mediastinal clips are noted.', {"No Finding": 1}),
    ('Stable mild cardiomegaly.', {"Cardiomegaly": 1}),
    ('The lungs are clear without focal consolidation.', {"Consolidation": 0, "No Finding": 1}),
    ('Mild interstitial edema, improved from prior.', {"Edema": 1}),
    ('Unchanged position of the left chest wall pacemaker.', {"Support Devices": 1, "No Finding": 1}),
    ('No acute cardiopulmonary abnormality.', {"No Finding": 1}),
    ('Compared to prior, there is no significant change.', {"No Finding": 1}),
    ('Small right apical pneumothorax.', {"Pneumothorax": 1}),
    ('Right-sided PICC line terminates in the mid SVC.', {"Support Devices": 1, "No Finding": 1}),
    ('Hyperinflation consistent with COPD.', {}),
    ('Multifocal consolidations suspicious for multifocal pneumonia.', {"Consolidation": 1, "Pneumonia": -1}),
    ('Mild pulmonary vascular congestion without frank edema.', {"Edema": -1}),
    ('The heart size is normal. The hilar and mediastinal contours are within normal limits.', {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ('Severe degenerative changes of the thoracic spine.', {}),
    ('Left lower lobe collapse.', {"Atelectasis": 1}),
    ('No displaced rib fracture.', {"Fracture": 0, "No Finding": 1}),
    ('Nodular opacity in the right upper lobe, which could represent a nodule.', {"Lung Lesion": 1, "Lung Opacity": 1}),
    ('Pleural effusion has decreased.', {"Pleural Effusion": 1}),
    ('Low lung volumes with crowding of the bronchovascular markings.', {"No Finding": 1}),
    ('Findings may represent early pulmonary edema.', {"Edema": -1}),
    ('No pulmonary edema. Heart size is top normal.', {"Edema": 0, "Cardiomegaly": 0, "No Finding": 1}),
    ('Pneumonia is not excluded in the right lower lobe.', {"Pneumonia": -1}),
    ('Cannot exclude a small left pleural effusion.', {"Pleural Effusion": -1}),
    ('There is a left lower lobe consolidation and a small effusion.', {"Consolidation": 1, "Pleural Effusion": 1}),
    ('The endotracheal tube has been removed.', {"Support Devices": 0, "No Finding": 1}),
    ('Elevation of the right hemidiaphragm.', {}),
    ('No pneumothorax and the heart is enlarged.', {"Pneumothorax": 0, "Cardiomegaly": 1}),
    ('Congestive heart failure.', {"Edema": 1, "Cardiomegaly": -1}),
    ('Unchanged cardiac silhouette.', {"Cardiomegaly": -1}),
    ('No pneumothorax, but small bilateral effusions persist.', {"Pneumothorax": 0, "Pleural Effusion": 1}),
]
HELD_OUT_CASES = [
    ('There is a new right upper lobe opacity.', {"Lung Opacity": 1}),
    ('No definite focal consolidation.', {"Consolidation": 0, "No Finding": 1}),
    ('The tip of the right internal jugular catheter is in the SVC.', {"Support Devices": 1, "No Finding": 1}),
    ('Increased opacity at the left base likely representing atelectasis.', {"Lung Opacity": 1, "Atelectasis": 1}),
    ('Small left effusion is unchanged.', {"Pleural Effusion": 1}),
    ('No evidence of pulmonary edema.', {"Edema": 0, "No Finding": 1}),
    ('Mild cardiomegaly is stable.', {"Cardiomegaly": 1}),
    ('There is blunting of the left costophrenic angle which may represent a small effusion.', {"Pleural Effusion": -1}),
    ('The cardiac silhouette is enlarged.', {"Cardiomegaly": 1}),
    ('Lungs are clear. No pleural effusion or pneumothorax. Heart size normal.', {"Pleural Effusion": 0, "Pneumothorax": 0, "Cardiomegaly": 0, "No Finding": 1}),
    ('Right middle lobe pneumonia.', {"Pneumonia": 1}),
    ('Subsegmental atelectasis in the left lower lobe, without pneumothorax.', {"Atelectasis": 1, "Pneumothorax": 0}),
    ('Feeding tube tip is in the stomach.', {"Support Devices": 1, "No Finding": 1}),
    ('Healed right rib fractures.', {"Fracture": 1}),
    ('Pulmonary nodule in the left upper lobe.', {"Lung Lesion": 1}),
    ('Findings suggestive of mild interstitial edema.', {"Edema": 1}),
    ('Enlarged cardiac silhouette with pulmonary vascular congestion.', {"Cardiomegaly": 1, "Edema": -1}),
    ('No focal airspace disease.', {"Lung Opacity": 0, "No Finding": 1}),
    ('Interval increase in bilateral pleural effusions.', {"Pleural Effusion": 1}),
    ('No large pleural effusion.', {"Pleural Effusion": 0, "No Finding": 1}),
    ('There is persistent consolidation in the right lower lobe.', {"Consolidation": 1}),
    ('Mediastinal contours are unremarkable.', {"Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ('Right lower lobe opacity could be atelectasis or aspiration.', {"Lung Opacity": 1, "Atelectasis": -1}),
    ('Cardiomegaly with no pulmonary edema.', {"Cardiomegaly": 1, "Edema": 0}),
    ('Questionable small right apical pneumothorax.', {"Pneumothorax": -1}),
]


@pytest.fixture(scope="module")
def labeler():
    return CheXpertRuleLabeler()


def _labels_of(labeler, text):
    row = labeler([text])[0]
    return {name: int(value) for name, value in zip(CHEXPERT_OBSERVATIONS, row) if not np.isnan(value)}


@pytest.mark.parametrize(
    "text, observation, expected",
    [
        ("No pleural effusion.", "Pleural Effusion", 0),
        ("Possible consolidation.", "Consolidation", -1),
        ("Cardiomegaly.", "Cardiomegaly", 1),
        ("No acute cardiopulmonary process.", "No Finding", 1),
        ("The heart is normal in size.", "Cardiomegaly", 0),
        ("Atelectasis versus pneumonia.", "Pneumonia", -1),
        ("No new consolidation.", "Consolidation", -1),
        ("Pneumonia cannot be excluded.", "Pneumonia", -1),
    ],
)
def test_brief_cases(labeler, text, expected, observation):
    assert _labels_of(labeler, text)[observation] == expected


def test_unmentioned_observations_are_nan(labeler):
    row = labeler(["No pleural effusion."])[0]
    assert row.shape == (14,)
    assert np.isnan(row[CHEXPERT_OBSERVATIONS.index("Cardiomegaly")])
    assert np.isnan(labeler([""])[0][CHEXPERT_OBSERVATIONS.index("Pleural Effusion")])


@pytest.mark.parametrize("text, expected", DEVELOPMENT_CASES + HELD_OUT_CASES)
def test_report_sentences(labeler, text, expected):
    assert _labels_of(labeler, text) == expected


def test_aggregation_rules(labeler):
    # negative + positive -> positive; negative + uncertain -> uncertain
    assert _labels_of(labeler, "No left effusion. Small right effusion.")["Pleural Effusion"] == 1
    assert _labels_of(labeler, "No consolidation. Possible consolidation at the right base.")["Consolidation"] == -1
    # No Finding ignores Support Devices but not the "other findings" list
    assert _labels_of(labeler, "Endotracheal tube in place.")["No Finding"] == 1
    assert "No Finding" not in _labels_of(labeler, "Emphysema.")
    assert _labels_of(labeler, "No emphysema.")["No Finding"] == 1
    # CHF makes Cardiomegaly uncertain only when the heart is not described
    assert _labels_of(labeler, "Findings of CHF. The heart size is normal.")["Cardiomegaly"] == 0


def test_abbreviations_decimals_and_ruled_out(labeler):
    assert _labels_of(labeler, "Atelectasis vs. pneumonia.") == {"Atelectasis": -1, "Pneumonia": -1}
    assert _labels_of(labeler, "No 2.5 cm nodule.") == {"Lung Lesion": 0, "No Finding": 1}
    assert _labels_of(labeler, "Pneumonia has been ruled out.") == {"Pneumonia": 0, "No Finding": 1}
    assert _labels_of(labeler, "Pneumonia is not ruled out.") == {"Pneumonia": -1}


def test_unmention_phrases_block_mentions(labeler):
    assert _labels_of(labeler, "Pacemaker leads project over the left heart.") == {"Support Devices": 1, "No Finding": 1}
    assert "Lung Lesion" not in _labels_of(labeler, "Massive pleural effusion.")
    assert "Pleural Effusion" not in _labels_of(labeler, "Small pericardial effusion.")


def test_annotate_explains_each_label(labeler):
    mentions = labeler.annotate("No pneumothorax. Possible pneumonia.")
    assert [(m.observation, m.label, m.rule) for m in mentions] == [
        ("Pneumothorax", 0.0, "no X"),
        ("Pneumonia", -1.0, "possible X"),
    ]
    assert mentions[1].sentence == "possible pneumonia."


def test_cleaning_and_sentence_split():
    assert clean_report("Effusion and/or atelectasis..Heart normal,lungs clear") == (
        "effusion or atelectasis. heart normal, lungs clear"
    )
    assert clean_report("A 2.5 cm nodule.") == "a 2.5 cm nodule."
    assert split_sentences(clean_report("No effusion.\nHeart normal? Lungs clear")) == [
        "no effusion.",
        "heart normal?",
        "lungs clear",
    ]


def test_agreement_on_the_phrase_lists(labeler):
    """Every mention phrase, put in a plain / negated / hedged sentence, labels its own observation.

    Plain sentences must give positive (uncertain for the four phrases CheXpert always treats as
    uncertain), "no ..." negative, "possible ..." uncertain; for the "No Finding" list (other findings)
    a plain or hedged mention suppresses No Finding and a negated one keeps it at 1.
    """
    column = {name: i for i, name in enumerate(CHEXPERT_OBSERVATIONS)}
    checks = agreed = 0
    for observation, phrases in labeler.mentions.items():
        for phrase in phrases:
            plain = -1 if phrase.strip() in ALWAYS_UNCERTAIN_MENTIONS else 1
            for template, expected in (("there is {} here.", plain), ("no {} here.", 0), ("possible {} here.", -1)):
                value = labeler([template.format(phrase)])[0][column[observation]]
                if observation == "No Finding":
                    agreed += bool(value == 1) if expected == 0 else bool(np.isnan(value))
                else:
                    agreed += bool(value == expected)
                checks += 1
    assert checks == 3 * sum(len(p) for p in labeler.mentions.values()) == 444
    assert agreed / checks == 1.0


def test_shipped_phrase_lists_are_the_originals(data_dir):
    source = data_dir / "chexpert_phrases" / "phrases"
    for kind in ("mention", "unmention"):
        names = sorted(p.name for p in (source / kind).glob("*.txt"))
        assert names == sorted(p.name for p in (PHRASES_DIR / kind).glob("*.txt"))
        match, mismatch, errors = filecmp.cmpfiles(source / kind, PHRASES_DIR / kind, names, shallow=False)
        assert mismatch == [] and errors == []
    assert "MIT License" in (PHRASES_DIR.parent / "LICENSE").read_text()


def test_labeler_input_checks(tmp_path, labeler):
    with pytest.raises(TypeError, match="list of report texts"):
        labeler("No effusion.")
    assert labeler([]).shape == (0, 14)
    with pytest.raises(FileNotFoundError, match="phrases_dir"):
        CheXpertRuleLabeler(tmp_path)
