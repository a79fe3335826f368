"""Layer 4, starting vLLM: engine settings and construction (`config`), dummy-weight model
folders (`models`), and the machine's CPU/GPU facts and samplers (`resources`)."""
