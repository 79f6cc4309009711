"""LoRA fine-tuning of the Wan backends on a curated kiss set, without Ray (workflows/train_lora.py runs it).

config       TrainConfig: every knob of a run, loaded from the `--config` YAML
dataset      the curated manifest's kept segments, checked up front, decoded at the training size
masks        the contact region (lips + where the two faces meet) from landmark tracks, on the latent grid
checks       bad input refused before any worker starts (empty set, captions, base model class, rank)
precompute   VAE latents, text and image embeddings, computed once and cached by content hash
objective    the flow-matching loss of diffusers' Wan/SD3 training examples, weighted per latent token
lora         peft LoRA on the attention and FFN projections; export in the service's loras/ layout
plan         TrainPlan: what every worker is handed (config, base model, precomputed keys)
loop         one worker's training loop: steps, checkpoints, resume, validation, reporting callbacks
validation   a fixed synthetic pair rendered with the current LoRA, scored by the quality report
memory       training memory per GPU from the model configs (meta-device arithmetic)

The inference-time attention bias toward the lip tokens (and the lip/token masks it shares with `masks`) is
kiss_core.generation.backends.lip_attention, the generator setting `lip_attention_bias`.
"""
