"""In-env ML engine of the model operators: train, evaluate, score and promote in-memory scikit-learn /
XGBoost models. ``dss_model.py`` is its recipe entry point (runner.py runs it; see actions.main()), and
train(), evaluate(), score() and promote() can be called in-process too.

Standard library only at module level: numpy, pandas, scikit-learn, xgboost, matplotlib and joblib are
imported inside the functions that need them, so the package loads in any code env and fails with a clear
message only when an action needs a missing library.

Modules, each importing only those above it: common (constants, small helpers), data (reading the data),
checks (definition and columns), metrics, estimators (pipeline, FittedModel, fitting), store (versions and
the active pointer), plots, then one module per action (train, evaluate, score, promote) and actions
(the recipe's dispatch on ``params["action"]``).

Directory contract (the operator relies on it)
----------------------------------------------
``model_dir`` is the saved model's directory. It is read-only here and may not exist yet (no versions)::

    model_dir/active.json                 {"version", "activated_at", "reason", "previous", "run"}
    model_dir/history/<UTC ts>-<V>.json   one file per pointer move (same content as active.json)
    model_dir/versions/<V>/model.joblib   the fitted sklearn Pipeline (preprocessing + estimator)
    model_dir/versions/<V>/meta.json      definition, task, target, features, algorithm, hyperparameters,
                                          metric, metrics, comparison with the champion, code env,
                                          execution config, image, data fingerprint, libraries, run ids
    model_dir/versions/<V>/metrics.json   just the metrics
    model_dir/versions/<V>/features.json  ordered input features with dtype and role (numeric/categorical)
    model_dir/versions/<V>/evaluations/<E>/metrics.json + PNG plots

Version ids are ``v<YYYYmmddTHHMMSS>Z-<4 hex>`` (UTC), evaluation ids the same with an ``e``. A new id
sorts after every existing one (so "latest" is the greatest id) and is never reused or overwritten.

Nothing is ever written into model_dir:

* train writes ``versions_out/<V>/...`` and evaluate ``versions_out/<V>/evaluations/<E>/...``; the
  operator moves versions_out onto ``model_dir/versions/`` after a success;
* moving the active pointer means writing ``pointer_out/active.json`` and
  ``pointer_out/history/<ts>-<V>.json``; pointer_out is moved onto model_dir AFTER versions_out, so
  active.json never names a missing version. Not moving the pointer writes nothing there;
* score writes ``predictions_out/predictions.csv`` (or ``.parquet``).

Every file is written complete, once. Mistakes the user must fix raise ModelInputError (runtime/errors.py),
whose message names the file, the column or field, the value, the fix and the closest valid name: the
runner reports it as "ModelInputError: <message>", so the message stands alone.
"""
