# dss_recipe for R recipes run by dss_airflow: the same context as the Python module dss_recipe.
#
#   input_path(name)   path of a declared input (a managed folder, or a file or directory inside one)
#   output_dir(name)   directory to write a declared output into (promoted atomically on success)
#   params()           the operator's recipe_params, as a list
#   set_result(value)  a JSON-serialisable value returned to Airflow (the XCom's "result")
#   connection(name)   an Airflow connection the operator declared (connections=[...]), as a list: host,
#                      login, password, schema, port, extra (a list), conn_type
#   variable(name)     an Airflow variable the operator declared (variables=[...]), as a string
#
# The runner (runner.py) runs `Rscript dss_recipe.R RECIPE ERROR_FILE`: the functions are attached as
# "dss_recipe", the recipe is sourced, and an error ends the run with its message and R traceback in the
# log and in ERROR_FILE (JSON), exit status 1. Needs the R package jsonlite (base images with `r: true`
# install it from the distribution, r-cran-jsonlite).

.dss_recipe <- new.env()
local(envir = .dss_recipe, {
  .context <- NULL

  .ctx <- function() {
    if (is.null(.context)) {
      path <- Sys.getenv("DSS_CONTEXT")
      if (!nzchar(path)) stop("dss_recipe is only available inside a recipe run by dss_airflow")
      .context <<- jsonlite::fromJSON(path, simplifyVector = FALSE)
    }
    .context
  }

  .named <- function(kind, name) {
    items <- .ctx()[[kind]]
    if (is.null(items[[name]])) {
      known <- if (length(items)) paste(sort(names(items)), collapse = ", ") else "none"
      stop(sprintf("no %s named '%s' in this recipe (declared: %s)", sub("s$", "", kind), name, known),
           call. = FALSE)
    }
    items[[name]]
  }

  input_path <- function(name) .named("inputs", name)

  output_dir <- function(name) .named("outputs", name)

  params <- function() {
    value <- .ctx()$params
    if (is.null(value) || !length(value)) return(list())
    jsonlite::fromJSON(jsonlite::toJSON(value, auto_unbox = TRUE, null = "null"))
  }

  .secrets <- NULL

  .declared_secret <- function(kind, name) {
    if (is.null(.secrets)) {
      path <- .ctx()[["secrets_file"]]
      .secrets <<- if (is.null(path)) list() else jsonlite::fromJSON(path, simplifyVector = FALSE)
    }
    items <- .secrets[[kind]]
    if (is.null(items[[name]])) {
      known <- if (length(items)) paste(sort(names(items)), collapse = ", ") else "none"
      stop(sprintf("no %s named '%s' declared by this task (declared: %s): add it to the operator's %s=[...]",
                   sub("s$", "", kind), name, known, kind), call. = FALSE)
    }
    items[[name]]
  }

  connection <- function(name) .declared_secret("connections", name)

  variable <- function(name) .declared_secret("variables", name)

  set_result <- function(value) {
    path <- file.path(dirname(.ctx()$result_file), "user_result.json")
    partial <- paste0(path, ".partial")
    jsonlite::write_json(value, partial, auto_unbox = TRUE, null = "null", na = "null", digits = NA)
    file.rename(partial, path)
    invisible(value)
  }
})

.dss_frames <- function(calls) {
  # The recipe's own frames: after source()'s eval(), before the error handler's.
  labels <- vapply(calls, function(call) paste(deparse(call, nlines = 1L), collapse = " "), "")
  first <- max(c(0L, which(startsWith(labels, "eval(ei, envir)")))) + 1L
  handler <- which(startsWith(labels, ".handleSimpleError(") | startsWith(labels, "h(simpleError("))
  last <- if (length(handler)) min(handler[handler >= first], length(labels) + 1L) - 1L else length(labels)
  if (first > last) return(character())
  vapply(first:last, function(i) {
    ref <- attr(calls[[i]], "srcref")
    where <- if (is.null(ref)) "" else sprintf(" at %s:%d", basename(attr(ref, "srcfile")$filename), ref[[1L]])
    paste0(labels[[i]], where)
  }, "")
}

.dss_run <- function(recipe, error_file) {
  if (!requireNamespace("jsonlite", quietly = TRUE)) {
    message("R error: dss_recipe needs the R package jsonlite: build the base image with `r: true` ",
            "(it installs r-cran-jsonlite) or add jsonlite to the code env's r_packages")
    quit(save = "no", status = 1L)
  }
  attach(.dss_recipe, name = "dss_recipe", warn.conflicts = FALSE)
  withCallingHandlers(
    source(recipe, local = new.env(parent = globalenv()), keep.source = TRUE),
    error = function(e) {
      frames <- .dss_frames(sys.calls())
      message("R error: ", conditionMessage(e))
      if (length(frames)) message("R traceback (outermost first):\n  ", paste(frames, collapse = "\n  "))
      detail <- list(message = conditionMessage(e), traceback = frames)
      jsonlite::write_json(detail, error_file, auto_unbox = TRUE)
      quit(save = "no", status = 1L)
    }
  )
  invisible(NULL)
}

local({
  args <- commandArgs(trailingOnly = TRUE)
  if (length(args) == 2L) .dss_run(args[[1L]], args[[2L]])
})
