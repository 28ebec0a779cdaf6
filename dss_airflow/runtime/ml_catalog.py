"""What a model definition may name: tasks, algorithms and metrics. Pure data, no imports beyond typing.

Shared by the in-container engine (dss_model.py) and the config layer on the worker, which validates the
YAML against it without importing scikit-learn.
"""

from typing import Dict

TASKS = ("classification", "regression")

# algorithm name -> {task: "module:Class"}; a task missing here is not offered for that algorithm.
ALGORITHMS: Dict[str, Dict[str, str]] = {
    "logistic_regression": {"classification": "sklearn.linear_model:LogisticRegression"},
    "linear_regression": {"regression": "sklearn.linear_model:LinearRegression"},
    "ridge": {
        "classification": "sklearn.linear_model:RidgeClassifier",
        "regression": "sklearn.linear_model:Ridge",
    },
    "random_forest": {
        "classification": "sklearn.ensemble:RandomForestClassifier",
        "regression": "sklearn.ensemble:RandomForestRegressor",
    },
    "extra_trees": {
        "classification": "sklearn.ensemble:ExtraTreesClassifier",
        "regression": "sklearn.ensemble:ExtraTreesRegressor",
    },
    "gradient_boosting": {
        "classification": "sklearn.ensemble:GradientBoostingClassifier",
        "regression": "sklearn.ensemble:GradientBoostingRegressor",
    },
    "hist_gradient_boosting": {
        "classification": "sklearn.ensemble:HistGradientBoostingClassifier",
        "regression": "sklearn.ensemble:HistGradientBoostingRegressor",
    },
    "decision_tree": {
        "classification": "sklearn.tree:DecisionTreeClassifier",
        "regression": "sklearn.tree:DecisionTreeRegressor",
    },
    "knn": {
        "classification": "sklearn.neighbors:KNeighborsClassifier",
        "regression": "sklearn.neighbors:KNeighborsRegressor",
    },
    "xgboost": {
        "classification": "xgboost:XGBClassifier",
        "regression": "xgboost:XGBRegressor",
    },
}

# task -> {metric name: greater_is_better}
METRICS: Dict[str, Dict[str, bool]] = {
    "classification": {
        "roc_auc": True,
        "accuracy": True,
        "f1": True,
        "precision": True,
        "recall": True,
        "log_loss": False,
    },
    "regression": {"r2": True, "rmse": False, "mae": False},
}

DEFAULT_METRIC = {"classification": "roc_auc", "regression": "r2"}
