"""Deployment helpers run on the deployer's machine (azd hooks, infra/deploy.sh); never deployed."""
