package tuning

// suggestTPE is the Bayesian sampler (first version: the random sampler
// until the TPE lands).
func suggestTPE(st Study, history []Trial, number int) (map[string]string, error) {
	_ = history
	return randomPoint(st.Space, st.Seed, number), nil
}
