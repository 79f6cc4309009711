"""The HTTP side of the Ingress deployment, apart from Serve: routes, form parsing, problem+json, and the
service the routes call (deployments.ingress adds the Serve handles and the replica's lifecycle)."""
