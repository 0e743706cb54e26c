// Package tuning holds a sweep's pure maths: the search space and its
// validation, the samplers that choose a trial's params (grid, random and
// a Bayesian one, TPE), and the early-stopping rules (median and ASHA).
// Everything here is a deterministic function of its arguments — the
// sweep's definition, the trial history it is shown, and the trial
// number — so a scheduler that replays a sweep's events gets the same
// answers, and the samplers' quality is testable without processes.
//
// The Bayesian sampler is the Tree-structured Parzen Estimator of
// Bergstra et al. (2011) as Optuna implements it (independent per
// parameter, Optuna's defaults: 10 startup trials, 24 expected-improvement
// candidates, gamma(n) = min(ceil(0.1 n), 25), Optuna's weights, bandwidth
// rule and prior component). It is written by hand: goptuna, the Go port
// of Optuna, is not served by the module proxy these builds use. gonum
// supplies the numerics it needs (log-sum-exp of mixture densities); the
// normal distribution's CDF and quantile come from math.Erf/Erfinv.
// The pruners follow Optuna's MedianPruner and SuccessiveHalvingPruner.
package tuning
