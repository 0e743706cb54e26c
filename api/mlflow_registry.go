package api

// mlflowRegistryRPCs is MLflow's model registry service over Maestro's
// registry: registered models, versions, stages, aliases and tags.
func (s *Server) mlflowRegistryRPCs() []mlflowRPC {
	return nil
}
