package api

// mlflowTrackingRPCs is MLflow's tracking service: experiments, runs,
// metrics and the artifact list.
func (s *Server) mlflowTrackingRPCs() []mlflowRPC {
	return nil
}
