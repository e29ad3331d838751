#!/usr/bin/env Rscript
# Reference accuracy from R's forecast package on the SAME series, rolling
# origins and horizon as bench/forecast-accuracy.ts (which writes the manifest
# and runs this script). MASE is computed exactly as src/forecast/metrics.ts
# does: mean |error| over the horizon divided by the in-sample MAE of the
# seasonal naive forecast at lag m (lag 1 when m = 1 or the training data is
# shorter than m), averaged over origins.
#
# Output columns: file,method,mase,smape,seconds (elapsed),notes,cpu_seconds.
#
# usage: Rscript bench/r/forecast.R MANIFEST.csv OUT.csv [methods] [seconds-per-fit]
#   MANIFEST.csv columns: file,path,m,h,n_used,origins (origins: space-separated,
#   0-based index of the first forecast point within the last n_used points)
#   methods: comma-separated subset of snaive,ets,auto.arima,tbats
# A fit that fails is reported as NA with the reason in the notes column. The
# elapsed-time limit only interrupts R code, not a long C routine, so the
# calling bench also runs each (series, method) under `timeout`.
suppressPackageStartupMessages(library(forecast))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 2) stop("usage: forecast.R MANIFEST.csv OUT.csv [methods] [seconds-per-fit]")
manifest <- read.csv(args[1], stringsAsFactors = FALSE)
out_path <- args[2]
methods <- if (length(args) >= 3) strsplit(args[3], ",")[[1]] else c("snaive", "ets", "auto.arima", "tbats")
limit <- if (length(args) >= 4) as.numeric(args[4]) else 300

mase_of <- function(actual, fc, scale) {
  mae <- mean(abs(actual - fc))
  if (scale > 0) return(mae / scale)
  if (mae == 0) return(0)
  lvl <- mean(abs(actual))
  if (lvl > 0) mae / lvl else 1
}
smape_of <- function(actual, fc) {
  d <- abs(actual) + abs(fc)
  e <- ifelse(d > 0, 2 * abs(actual - fc) / d, 0)
  100 * mean(e)
}
scale_of <- function(train, m) {
  lag <- if (m > 1 && length(train) > m) m else 1
  if (length(train) <= lag) return(0)
  mean(abs(diff(train, lag = lag)))
}

fit_forecast <- function(method, x, h) {
  switch(method,
    snaive = snaive(x, h = h)$mean,
    ets = forecast(ets(x), h = h)$mean,
    auto.arima = forecast(auto.arima(x), h = h)$mean,
    tbats = forecast(tbats(x, use.parallel = FALSE), h = h)$mean,
    stop(paste("unknown method", method))
  )
}

rows <- list()
for (i in seq_len(nrow(manifest))) {
  row <- manifest[i, ]
  y <- read.csv(row$path)$value
  y <- tail(y, row$n_used)
  origins <- as.integer(strsplit(as.character(row$origins), " ")[[1]])
  for (method in methods) {
    mases <- c()
    smapes <- c()
    notes <- c()
    failed <- FALSE
    started <- proc.time()
    cpu_of <- function(t) t[["user.self"]] + t[["sys.self"]] + t[["user.child"]] + t[["sys.child"]]
    for (o in origins) {
      train <- y[seq_len(o)]
      actual <- y[(o + 1):(o + row$h)]
      x <- ts(train, frequency = max(1, row$m))
      fc <- tryCatch(
        {
          setTimeLimit(elapsed = limit, transient = TRUE)
          on.exit(setTimeLimit(elapsed = Inf), add = TRUE)
          as.numeric(suppressWarnings(fit_forecast(method, x, row$h)))
        },
        error = function(e) {
          notes <<- c(notes, paste0("origin ", o, ": ", conditionMessage(e)))
          NULL
        }
      )
      setTimeLimit(elapsed = Inf)
      if (is.null(fc) || any(!is.finite(fc))) {
        fc <- as.numeric(snaive(x, h = row$h)$mean)
        if (length(notes) == 0) notes <- c(notes, paste0("origin ", o, ": non-finite forecast"))
        failed <- TRUE
      }
      sc <- scale_of(train, row$m)
      mases <- c(mases, mase_of(actual, fc, sc))
      smapes <- c(smapes, smape_of(actual, fc))
    }
    ended <- proc.time()
    secs <- ended[["elapsed"]] - started[["elapsed"]]
    cpu <- cpu_of(ended) - cpu_of(started)
    note <- gsub("[\r\n,]", " ", paste(unique(notes), collapse = "; "))
    rows[[length(rows) + 1]] <- data.frame(
      file = row$file, method = method,
      mase = if (failed) NA else mean(mases), smape = if (failed) NA else mean(smapes),
      seconds = secs, notes = note, cpu_seconds = cpu, stringsAsFactors = FALSE
    )
    cat(sprintf("%s %s mase=%.3f %.1fs (cpu %.1fs) %s\n", row$file, method, mean(mases), secs, cpu, note), file = stderr())
    write.csv(do.call(rbind, rows), out_path, row.names = FALSE)
  }
}
write.csv(do.call(rbind, rows), out_path, row.names = FALSE)
