"""The in-container model engine (dss_airflow/runtime/model/), run in-process on scikit-learn's
bundled data sets. The test plays the operator's part: staged files are moved into the model directory,
versions first, then the pointer, and a staged file never overwrites a version's file."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from dss_airflow.runtime import ml_catalog, runner
from dss_airflow.runtime.errors import ModelInputError
from dss_airflow.runtime.model import evaluate, promote, score, train
from dss_airflow.runtime.model.common import EVALUATION_PATTERN, VERSION_PATTERN
from dss_airflow.runtime.model.store import list_versions, new_id

pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

RUN = {
    "code_env": "ml",
    "execution_config": "local",
    "image": None,
    "dag_id": "churn",
    "task_id": "train",
    "run_id": "manual__1",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_PLOT_SHAPE = (450, 600)  # PLOT_SIZE (6 x 4.5 in) at 100 dpi: rows, columns


def cancer_definition(**changes: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "task": "classification",
        "target": "target",
        "features": None,
        "exclude": [],
        "categorical": [],
        "algorithm": "random_forest",
        "hyperparameters": {"n_estimators": 20},
        "split": {"test_size": 0.2, "seed": 42, "stratify": True},
        "cv_folds": None,
        "metric": "roc_auc",
    }
    definition.update(changes)
    return definition


def diabetes_definition(**changes: Any) -> dict[str, Any]:
    return cancer_definition(
        task="regression", target="target", metric="r2", split={"test_size": 0.2, "seed": 42}, **changes
    )


def files_under(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def move_tree(staging: Path, destination: Path, replaceable: tuple[str, ...] = ()) -> None:
    """What the operator does after a success; a version's file is never replaced."""
    for relative in files_under(staging):
        target = destination / relative
        assert relative in replaceable or not target.exists(), f"{target} would be overwritten"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)


class ModelStore:
    """A model directory and the operator's part around each action: staging dirs, then promotion."""

    def __init__(self, root: Path, model_id: str = "cancer") -> None:
        self.root = root
        self.model_dir = root / "model"
        self.model_id = model_id
        self.runs = 0
        self.staged_pointer: list[str] = []

    def staging(self) -> Path:
        self.runs += 1
        return self.root / "staging" / str(self.runs)

    def publish(self, staging: Path) -> None:
        self.staged_pointer = files_under(staging / "pointer")
        move_tree(staging / "versions", self.model_dir / "versions")
        move_tree(staging / "pointer", self.model_dir, replaceable=("active.json",))

    def train(self, definition: dict[str, Any], data: Path, promotion: str = "always") -> dict[str, Any]:
        staging = self.staging()
        result = train.train(
            definition,
            str(data),
            str(self.model_dir),
            str(staging / "versions"),
            str(staging / "pointer"),
            run_info=RUN,
            promotion=promotion,
            model_id=self.model_id,
        )
        self.publish(staging)
        return result

    def evaluate(self, data: Path, **options: Any) -> dict[str, Any]:
        staging = self.staging()
        result = evaluate.evaluate(
            None, str(data), str(self.model_dir), str(staging / "versions"), run_info=RUN, **options
        )
        self.publish(staging)
        return result

    def promote(self, **options: Any) -> dict[str, Any]:
        staging = self.staging()
        result = promote.promote(str(self.model_dir), str(staging / "pointer"), run_info=RUN, **options)
        self.publish(staging)
        return result

    def score(self, data: Path, **options: Any) -> tuple[dict[str, Any], Path]:
        out = self.staging() / "predictions"
        result = score.score(str(data), str(self.model_dir), str(out), run_info=RUN, **options)
        return result, out / result["output"]

    def active(self) -> str:
        return str(json.loads((self.model_dir / "active.json").read_text())["version"])

    def meta(self, version: str) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads((self.model_dir / "versions" / version / "meta.json").read_text())
        return meta


@pytest.fixture(scope="module")
def cancer() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame


@pytest.fixture(scope="module")
def cancer_csv(cancer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cancer.csv"
    cancer.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_diabetes

    path = tmp_path_factory.mktemp("data") / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path)


def assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path
    assert imread(path).shape[:2] == EXPECTED_PLOT_SHAPE, path


# ------------------------------------------------------------------------------------------------ train


def test_first_training_activates_it_and_writes_every_file(store: ModelStore, cancer_csv: Path, cancer):
    result = store.train(cancer_definition(), cancer_csv, promotion="if_better")

    version = result["version"]
    assert VERSION_PATTERN.match(version)
    assert result["promoted"] and result["reason"] == "no active version"
    assert result["active"] == version and result["comparison"] is None
    assert set(result["metrics"]) == set(ml_catalog.METRICS["classification"])
    assert result["score"] == result["metrics"]["roc_auc"] > 0.95
    version_dir = store.model_dir / "versions" / version
    assert files_under(version_dir) == ["features.json", "meta.json", "metrics.json", "model.joblib"]
    meta = store.meta(version)
    assert meta["model_id"] == "cancer" and meta["version"] == version
    assert meta["task"] == "classification" and meta["target"] == "target"
    assert meta["features"] == [column for column in cancer.columns if column != "target"]
    assert meta["hyperparameters"] == {"n_estimators": 20, "random_state": 42}, "seeded for reproducibility"
    assert meta["definition"]["hyperparameters"] == {"n_estimators": 20}, "the user's definition as given"
    assert meta["data"]["sha256"] == hashlib.sha256(cancer_csv.read_bytes()).hexdigest()
    assert meta["data"]["rows"] == 569 and meta["data"]["train_rows"] + meta["data"]["test_rows"] == 569
    assert meta["code_env"] == "ml" and meta["image"] is None and meta["execution_config"] == "local"
    assert meta["run"] == {"dag_id": "churn", "task_id": "train", "run_id": "manual__1"}
    assert {"python", "sklearn", "pandas", "numpy"} <= set(meta["libraries"])
    assert meta["classes"] == [0, 1] and meta["comparison"] is None
    assert json.loads((version_dir / "metrics.json").read_text()) == meta["metrics"]
    features = json.loads((version_dir / "features.json").read_text())
    assert features[0] == {"name": "mean radius", "dtype": "float64", "role": "numeric"}
    pointer = json.loads((store.model_dir / "active.json").read_text())
    assert pointer["version"] == version and pointer["previous"] is None
    assert pointer["reason"] == "no active version"
    [history] = files_under(store.model_dir / "history")
    assert history.endswith(f"-{version}.json")
    assert json.loads((store.model_dir / "history" / history).read_text()) == pointer

    import joblib

    pipeline = joblib.load(version_dir / "model.joblib")
    assert set(pipeline.predict(cancer[meta["features"]].head())) <= {0, 1}


def test_version_ids_are_unique_ordered_and_never_reused(store: ModelStore, cancer_csv: Path):
    versions = [store.train(cancer_definition(), cancer_csv, promotion="never")["version"] for _ in range(3)]

    assert len(set(versions)) == 3 and versions == sorted(versions), "each new id sorts after the others"
    assert list_versions(str(store.model_dir)) == versions
    assert store.active() == versions[0], "'never' kept the first version active"
    # same second as the newest id, or a clock behind it: the new id still sorts after it
    future = "v20990101T000000Z-fffe"
    assert new_id("v", [future]) == "v20990101T000000Z-ffff"
    after_last_suffix = new_id("v", ["v20990101T000000Z-ffff"])
    assert after_last_suffix.startswith("v20990101T000001Z-")
    assert EVALUATION_PATTERN.match(new_id("e", []))


def test_if_better_keeps_the_champion_against_noisy_labels_and_promotes_a_stronger_model(
    store: ModelStore, cancer, tmp_path: Path
):
    from sklearn.model_selection import train_test_split

    # an unstratified split depends only on the row count and the seed: the same rows as the engine's
    split = {"test_size": 0.2, "seed": 42, "stratify": False}
    train_rows, _test_rows = train_test_split(np.arange(len(cancer)), test_size=0.2, random_state=42)
    flipped = np.random.default_rng(0).choice(train_rows, size=int(0.4 * len(train_rows)), replace=False)
    noisy = cancer.copy()
    noisy.loc[flipped, "target"] = 1 - noisy.loc[flipped, "target"]
    clean_csv, noisy_csv = tmp_path / "clean.csv", tmp_path / "noisy.csv"
    cancer.to_csv(clean_csv, index=False)
    noisy.to_csv(noisy_csv, index=False)
    tree = {"algorithm": "decision_tree", "hyperparameters": {"max_depth": 3}, "split": split}
    champion = store.train(cancer_definition(**tree), clean_csv)["version"]

    noisy_result = store.train(cancer_definition(split=split), noisy_csv, promotion="if_better")

    assert not noisy_result["promoted"] and store.active() == champion
    comparison = noisy_result["comparison"]
    assert comparison["champion"] == champion and comparison["data"] == "test split of noisy.csv"
    assert comparison["challenger_score"] < comparison["champion_score"]
    assert noisy_result["reason"].startswith(f"not promoted: challenger {noisy_result['version']} roc_auc ")
    assert noisy_result["reason"].endswith(f"; the active version stays {champion}")
    assert " <= champion " in noisy_result["reason"]
    assert store.staged_pointer == [], "the pointer was not staged"
    assert store.meta(noisy_result["version"])["comparison"] == comparison

    stronger = store.train(
        cancer_definition(algorithm="logistic_regression", hyperparameters={}, split=split),
        clean_csv,
        promotion="if_better",
    )

    assert stronger["promoted"] and store.active() == stronger["version"] == stronger["active"]
    assert stronger["reason"].startswith(f"challenger {stronger['version']} roc_auc ")
    assert f" > champion {champion} " in stronger["reason"]
    pointer = json.loads((store.model_dir / "active.json").read_text())
    assert pointer["previous"] == champion and pointer["reason"] == stronger["reason"]
    assert len(files_under(store.model_dir / "history")) == 2


def test_promotion_never_records_the_comparison_but_stages_no_pointer(store: ModelStore, cancer_csv: Path):
    first = store.train(cancer_definition(), cancer_csv)["version"]

    result = store.train(cancer_definition(), cancer_csv, promotion="never")

    assert not result["promoted"] and result["active"] == first
    assert result["reason"] == f"not promoted: promotion is 'never'; the active version stays {first}"
    assert result["comparison"]["champion"] == first and result["comparison"]["champion_score"] > 0.9
    assert store.staged_pointer == [] and store.active() == first


def test_cross_validation_metrics_and_regression_plots(store: ModelStore, diabetes_csv: Path):
    definition = diabetes_definition(
        algorithm="hist_gradient_boosting", hyperparameters={"max_iter": 30}, cv_folds=3
    )
    version = store.train(definition, diabetes_csv)["version"]

    meta = store.meta(version)
    assert meta["metrics_source"] == "cv" and set(meta["metrics"]) == {"r2", "rmse", "mae"}
    assert meta["metrics"] != meta["test_metrics"], "CV means on the train part, test split kept apart"
    assert meta["greater_is_better"] is True

    result = store.evaluate(diabetes_csv)

    names = [Path(plot).name for plot in result["plots"]]
    assert names == ["residuals.png", "predicted_vs_actual.png", "feature_importance.png"]
    for plot in result["plots"]:
        assert_valid_png(store.model_dir / plot)
    record = json.loads((store.model_dir / Path(result["plots"][0]).parent / "metrics.json").read_text())
    assert record["feature_importance"]["method"] == "permutation importance", "HGB has no importances"
    assert len(record["feature_importance"]["top"]) == 10
    assert result["champion"] is None, "the evaluated version is the active one"


# --------------------------------------------------------------------------------------------- evaluate


def test_evaluate_writes_plots_and_scores_the_active_version_on_the_same_data(
    store: ModelStore, cancer_csv: Path
):
    stump = cancer_definition(algorithm="decision_tree", hyperparameters={"max_depth": 1})
    champion = store.train(stump, cancer_csv)["version"]
    linear = cancer_definition(algorithm="logistic_regression", hyperparameters={})
    candidate = store.train(linear, cancer_csv, promotion="never")["version"]

    result = store.evaluate(cancer_csv, version="latest")

    evaluation = result["evaluation"]
    assert result["version"] == candidate and EVALUATION_PATTERN.match(evaluation)
    evaluation_dir = store.model_dir / "versions" / candidate / "evaluations" / evaluation
    expected = ["roc.png", "precision_recall.png", "confusion_matrix.png", "feature_importance.png"]
    assert result["plots"] == [f"versions/{candidate}/evaluations/{evaluation}/{name}" for name in expected]
    for name in expected:
        assert_valid_png(evaluation_dir / name)
    record = json.loads((evaluation_dir / "metrics.json").read_text())
    assert record["metrics"] == result["metrics"] and record["metric"] == "roc_auc"
    assert record["feature_importance"]["method"] == "|coef_|"
    assert record["champion"] == result["champion"] and record["champion"]["version"] == champion
    assert set(record["champion"]["metrics"]) == set(ml_catalog.METRICS["classification"])
    hint = record["decision_hint"]
    assert hint["candidate_score"] == result["metrics"]["roc_auc"] > hint["active_score"]
    assert hint["active_score"] == record["champion"]["metrics"]["roc_auc"]
    assert hint["better"] == "candidate"

    promoted = store.promote()

    assert promoted["promoted"] and promoted["version"] == candidate == store.active()
    assert promoted["previous"] == champion
    assert promoted["reason"].startswith(f"evaluation {evaluation}: candidate {candidate} roc_auc ")
    assert f" > active {champion} " in promoted["reason"]

    # the former champion, evaluated against the new active version, loses: promote keeps the pointer
    back = store.evaluate(cancer_csv, version=champion)
    assert back["decision_hint"]["better"] == "active"

    refused = store.promote(version=champion)

    assert not refused["promoted"] and store.active() == candidate and store.staged_pointer == []
    assert refused["reason"].startswith(
        f"not promoted (evaluation {back['evaluation']}): candidate {champion}"
    )
    assert refused["reason"].endswith(f"; the active version stays {candidate}")


def test_evaluate_without_the_target_says_which_column(store: ModelStore, cancer, cancer_csv, tmp_path):
    store.train(cancer_definition(), cancer_csv)
    unlabelled = tmp_path / "unlabelled.csv"
    cancer.drop(columns="target").to_csv(unlabelled, index=False)

    with pytest.raises(ModelInputError, match="target column 'target' not found"):
        store.evaluate(unlabelled)


# ---------------------------------------------------------------------------------------------- promote


def test_promote_forced_without_comparison_and_already_active(store: ModelStore, cancer_csv: Path):
    stump = cancer_definition(algorithm="decision_tree", hyperparameters={"max_depth": 1})
    first = store.train(stump, cancer_csv)["version"]
    second = store.train(cancer_definition(), cancer_csv, promotion="never")["version"]
    third = store.train(cancer_definition(algorithm="extra_trees"), cancer_csv, promotion="never")["version"]

    forced = store.promote(version=third, force=True)

    assert forced["promoted"] and forced["reason"] == "forced by the trigger"
    assert forced["active"] == third == store.active() and forced["previous"] == first
    assert json.loads((store.model_dir / "active.json").read_text())["previous"] == first

    no_evidence = store.promote(version=second)

    assert not no_evidence["promoted"] and store.staged_pointer == []
    assert no_evidence["reason"] == (
        f"no comparison against the active version {third}: run DSSEvaluateModelOperator with "
        "compare_with_active first or force"
    )

    already = store.promote()

    assert already == {
        "model_id": "cancer",
        "version": third,
        "promoted": False,
        "reason": f"{third} is already the active version",
        "active": third,
        "previous": third,
    }


def test_promote_falls_back_on_the_training_comparison(store: ModelStore, cancer_csv: Path):
    stump = cancer_definition(algorithm="decision_tree", hyperparameters={"max_depth": 1})
    first = store.train(stump, cancer_csv)["version"]
    forest = store.train(cancer_definition(), cancer_csv, promotion="never")["version"]

    result = store.promote(version=forest)

    assert result["promoted"] and store.active() == forest
    assert result["reason"].startswith("training comparison on the test split of cancer.csv: candidate ")
    assert f" > active {first} " in result["reason"]


# ------------------------------------------------------------------------------------------------ score


def test_score_writes_predictions_with_probability_and_version(store: ModelStore, cancer, tmp_path: Path):
    training = tmp_path / "cancer.csv"
    cancer.to_csv(training, index=False)
    version = store.train(cancer_definition(), training)["version"]
    new_rows = tmp_path / "new.csv"
    cancer.drop(columns="target").assign(customer=range(len(cancer))).head(50).to_csv(new_rows, index=False)

    result, output = store.score(new_rows)

    assert result["version"] == version and result["rows"] == 50 and result["output"] == "predictions.csv"
    predictions = pd.read_csv(output)
    assert list(predictions.columns) == result["columns"]
    assert result["columns"][-3:] == ["prediction", "probability", "model_version"]
    assert "customer" in predictions.columns, "extra input columns are kept"
    assert set(predictions["model_version"]) == {version}
    assert predictions["probability"].between(0, 1).all()
    assert ((predictions["probability"] > 0.5) == (predictions["prediction"] == 1)).mean() > 0.95

    nothing_new = tmp_path / "nothing.csv"
    cancer.drop(columns="target").head(0).to_csv(nothing_new, index=False)
    empty, empty_output = store.score(nothing_new)
    assert empty["rows"] == 0 and empty["columns"][-3:] == ["prediction", "probability", "model_version"]
    assert len(pd.read_csv(empty_output)) == 0


def test_score_without_an_active_version_says_what_to_do(store: ModelStore, cancer_csv: Path):
    with pytest.raises(ModelInputError, match="no active version .*: train first or choose a version"):
        store.score(cancer_csv)


# ------------------------------------------------------------------------------------------------ inputs


def test_xgboost_classification_keeps_string_labels_and_regression_works(
    store: ModelStore, cancer, diabetes_csv: Path, tmp_path: Path
):
    pytest.importorskip("xgboost")
    labelled = tmp_path / "labelled.csv"
    cancer.assign(target=cancer["target"].map({0: "malignant", 1: "benign"})).to_csv(labelled, index=False)
    definition = cancer_definition(algorithm="xgboost", hyperparameters={"n_estimators": 20, "max_depth": 3})

    result = store.train(definition, labelled)

    meta = store.meta(result["version"])
    assert meta["label_classes"] == ["benign", "malignant"] and "xgboost" in meta["libraries"]
    assert result["metrics"]["accuracy"] > 0.9
    scored, output = store.score(labelled)
    predictions = pd.read_csv(output)
    assert set(predictions["prediction"]) == {"benign", "malignant"}
    assert (predictions["prediction"] == predictions["target"]).mean() > 0.9
    assert store.evaluate(labelled)["metrics"]["roc_auc"] > 0.9

    regression = ModelStore(tmp_path / "regression", model_id="diabetes")
    regression_result = regression.train(diabetes_definition(algorithm="xgboost"), diabetes_csv)

    assert regression_result["metrics"]["r2"] > 0.2 and regression_result["metrics"]["rmse"] > 0


def test_multiclass_plots_metrics_and_probability_per_class(tmp_path: Path):
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    data = tmp_path / "iris.csv"
    iris.frame.assign(target=iris.target_names[iris.target]).to_csv(data, index=False)
    store = ModelStore(tmp_path / "iris", model_id="iris")
    ridge = cancer_definition(algorithm="ridge", hyperparameters={})

    result = store.train(ridge, data)

    assert result["metrics"]["roc_auc"] > 0.8, "one-vs-rest AUC from decision scores (no probabilities)"
    assert result["metrics"]["log_loss"] is None
    store.train(cancer_definition(algorithm="knn", hyperparameters={"n_neighbors": 5}), data)
    evaluation = store.evaluate(data)
    assert [Path(plot).name for plot in evaluation["plots"]] == [
        "confusion_matrix.png",
        "feature_importance.png",
    ]
    for plot in evaluation["plots"]:
        assert_valid_png(store.model_dir / plot)
    scored, output = store.score(data)
    probabilities = [f"probability_{name}" for name in iris.target_names]
    assert scored["columns"][-5:] == ["prediction", *probabilities, "model_version"]
    predictions = pd.read_csv(output)
    assert np.allclose(predictions[probabilities].sum(axis=1), 1.0)
    assert (predictions["prediction"] == predictions["target"]).mean() > 0.9


def test_categorical_columns_are_one_hot_encoded_and_unknown_values_ignored(store: ModelStore, tmp_path):
    rng = np.random.default_rng(1)
    city = rng.choice(["Paris", "Lyon", "Nice"], size=300)
    size = rng.normal(size=300)
    churned = ((city == "Paris") | (size > 1.0)).astype(int)
    data = tmp_path / "customers.csv"
    pd.DataFrame({"city": city, "size": size, "churned": churned}).to_csv(data, index=False)
    definition = cancer_definition(target="churned", categorical=["city"], algorithm="logistic_regression")
    definition["hyperparameters"] = {}

    result = store.train(definition, data)

    assert result["metrics"]["accuracy"] > 0.9
    features = json.loads((store.model_dir / "versions" / result["version"] / "features.json").read_text())
    assert [(f["name"], f["role"]) for f in features] == [("city", "categorical"), ("size", "numeric")]
    evaluation = store.evaluate(data)
    record_path = store.model_dir / Path(evaluation["plots"][0]).parent / "metrics.json"
    top = [item["feature"] for item in json.loads(record_path.read_text())["feature_importance"]["top"]]
    assert "city_Paris" in top
    unseen = tmp_path / "unseen.csv"
    pd.DataFrame({"city": ["Berlin", "Paris"], "size": [0.0, 0.0]}).to_csv(unseen, index=False)
    _, output = store.score(unseen)
    assert list(pd.read_csv(output)["prediction"]) == [0, 1]


def test_parquet_directory_input_and_parquet_output(store: ModelStore, cancer, tmp_path: Path):
    folder = tmp_path / "prepared"
    (folder / ".dss-staging").mkdir(parents=True)
    cancer.iloc[:300].to_parquet(folder / "part-0.parquet")
    cancer.iloc[300:].to_parquet(folder / "part-1.parquet")
    (folder / ".dss-staging" / "half-written.parquet").write_bytes(b"not parquet")

    result = store.train(cancer_definition(), folder)

    data = store.meta(result["version"])["data"]
    assert data["files"] == ["part-0.parquet", "part-1.parquet"] and data["rows"] == 569
    assert len(data["sha256"]) == 64
    scored, output = store.score(folder / "part-1.parquet", output_format="parquet")
    assert output.name == "predictions.parquet"
    assert len(pd.read_parquet(output)) == scored["rows"] == 269


def with_text_column(frame):
    return frame.assign(grade=np.where(frame["mean radius"] > 14, "high", "low"))


@pytest.mark.parametrize(
    ("changes", "transform", "expected"),
    [
        pytest.param(
            {"target": "targt"},
            None,
            ["data cancer.csv: target column 'targt' not found.", "Did you mean 'target'?", "Fix target:"],
            id="missing-target",
        ),
        pytest.param(
            {"features": ["mean radius", "mean textur"]},
            None,
            ["column 'mean textur' named in features:", "Did you mean 'mean texture'?"],
            id="unknown-feature",
        ),
        pytest.param(
            {},
            with_text_column,
            [
                "feature 'grade' is not numeric (sample value 'high')",
                "add it to categorical: or encode it in the prepare recipe",
            ],
            id="text-not-categorical",
        ),
        pytest.param(
            {"hyperparameters": {"n_estimator": 20}},
            None,
            [
                "hyperparameter 'n_estimator' is not a parameter of random_forest",
                "Did you mean 'n_estimators'?",
            ],
            id="unknown-hyperparameter",
        ),
        pytest.param(
            {"algorithm": "random_forrest"}, None, ["Did you mean 'random_forest'?"], id="unknown-algorithm"
        ),
        pytest.param(
            {"metric": "auc"}, None, ["metric 'auc' is not a classification metric"], id="unknown-metric"
        ),
        pytest.param(
            {},
            lambda frame: frame.assign(target=frame["target"].where(frame.index != 7)),
            ["target column 'target' has 1 missing values (rows 7)"],
            id="target-with-nan",
        ),
        pytest.param(
            {},
            lambda frame: frame.assign(target=1),
            ["target 'target' has a single class 1"],
            id="single-class",
        ),
        pytest.param(
            {},
            lambda frame: frame.assign(target=frame["mean radius"]),
            ["target 'target' of a classification has fractional values", "use task: regression"],
            id="continuous-target",
        ),
        pytest.param(
            {"hyperparameters": {"n_estimators": -3}},
            None,
            [
                "a hyperparameter of random_forest has an invalid value: ",
                "n_estimators",
                "Fix hyperparameters:",
            ],
            id="invalid-hyperparameter-value",
        ),
        pytest.param(
            {"algorithm": "ridge", "metric": "log_loss", "hyperparameters": {}},
            None,
            ["metric log_loss needs class probabilities, which ridge (RidgeClassifier) does not give"],
            id="log-loss-without-probabilities",
        ),
    ],
)
def test_bad_inputs_fail_with_a_message_that_says_how_to_fix(
    store: ModelStore, cancer, tmp_path: Path, changes, transform, expected
):
    data = tmp_path / "cancer.csv"
    (transform(cancer) if transform else cancer).to_csv(data, index=False)

    with pytest.raises(ModelInputError) as raised:
        store.train(cancer_definition(**changes), data)

    for fragment in expected:
        assert fragment in str(raised.value)
    assert files_under(store.root / "staging") == [], "nothing staged"


def test_missing_data_and_unknown_version_name_the_fix(store: ModelStore, cancer_csv: Path, tmp_path):
    with pytest.raises(ModelInputError, match=r"data .*nowhere\.csv does not exist: check"):
        store.train(cancer_definition(), tmp_path / "nowhere.csv")
    version = store.train(cancer_definition(), cancer_csv)["version"]
    typo = version[:-1] + ("0" if version[-1] != "0" else "1")

    with pytest.raises(ModelInputError) as raised:
        store.evaluate(cancer_csv, version=typo)

    message = str(raised.value)
    assert f"version {typo!r} not found" in message and f"Did you mean {version!r}?" in message
    assert f"Existing versions (newest last): {version}" in message


# ------------------------------------------------------------------------------------------ recipe main


@pytest.fixture
def in_code_env(monkeypatch):
    """The runtime as runner.py loads it in a code env: the package dss_runtime, with dss_airflow not
    importable. Its modules are dropped again afterwards."""
    monkeypatch.setitem(sys.modules, "dss_airflow.runtime", None)
    runner.register_runtime_package()
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "dss_runtime"]:
        del sys.modules[name]


def run_recipe(tmp_path: Path, monkeypatch, params: dict, inputs: dict, outputs: dict) -> dict:
    """Run dss_model.py as runner.py does (a module of dss_runtime, as __main__, ``import dss_recipe``
    giving the package's module), in_code_env; returns what dss_recipe.set_result wrote."""
    xcom = tmp_path / "xcom"
    xcom.mkdir(exist_ok=True)
    context = {
        "inputs": inputs,
        "outputs": outputs,
        "params": params,
        "result_file": str(xcom / "return.json"),
    }
    context_file = tmp_path / "context.json"
    context_file.write_text(json.dumps(context))
    monkeypatch.setenv("DSS_CONTEXT", str(context_file))
    monkeypatch.setitem(sys.modules, "dss_recipe", importlib.import_module("dss_runtime.dss_recipe"))
    runpy.run_module("dss_runtime.dss_model", run_name="__main__", alter_sys=True)
    user_result = xcom / "user_result.json"
    result: dict = json.loads(user_result.read_text())
    user_result.unlink()
    return result


@pytest.mark.usefixtures("in_code_env")
def test_main_dispatches_on_the_action_through_dss_recipe(tmp_path: Path, monkeypatch, cancer_csv: Path):
    model_dir = tmp_path / "model"
    staging = tmp_path / "staging"
    params = {"action": "train", "model_id": "cancer", "definition": cancer_definition(), "run": RUN}
    outputs = {"versions": str(staging / "versions"), "pointer": str(staging / "pointer")}

    trained = run_recipe(
        tmp_path, monkeypatch, params, {"data": str(cancer_csv), "models": str(model_dir)}, outputs
    )

    assert trained["promoted"] and trained["model_id"] == "cancer"
    move_tree(staging / "versions", model_dir / "versions")
    move_tree(staging / "pointer", model_dir)
    assert (model_dir / "versions" / trained["version"] / "model.joblib").is_file()

    scored = run_recipe(
        tmp_path,
        monkeypatch,
        {"action": "score", "model_id": "cancer", "output_format": "csv", "run": RUN},
        {"data": str(cancer_csv), "models": str(model_dir)},
        {"predictions": str(staging / "predictions")},
    )

    assert scored["version"] == trained["version"] and scored["rows"] == 569
    assert (staging / "predictions" / "predictions.csv").is_file()

    with pytest.raises(ValueError, match="action 'trian' is not one of .* Did you mean 'train'"):
        run_recipe(tmp_path, monkeypatch, dict(params, action="trian"), {}, {})
