"""A tiny multimodal model on the session's tiny cohort, shared by the deploy and serve tests."""

import torch


def build_tiny_model(cohort, seed=0):
    from medmm.models.multimodal import ModelConfig, MultimodalModel
    from medmm.preprocess import MultimodalPreprocessor
    from medmm.preprocess.image import ImagePreprocessor
    from medmm.preprocess.text import TextPreprocessor

    torch.manual_seed(seed)
    train = cohort.split("train")
    # an explicit n-gram vocabulary (not 'auto', which keeps 32 for 22 notes): the notes encoder's
    # Linear layer then outweighs the rest, as in a real model, so quantisation visibly shrinks it
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16)),
                                 notes=TextPreprocessor(max_features=2000)).fit(train)
    cfg = ModelConfig(tasks={"tumor": "binary", "disease": "binary"}, dim=16,
                      encoders={"image": {"name": "tiny_cnn3d", "channels": (4, 8)}, "notes": {"name": "tfidf_mlp", "hidden": 16},
                                "vitals": {"name": "gru", "hidden": 8}, "ehr": {"name": "mlp", "hidden": 8}},
                      fusion={"name": "attention", "heads": 2})
    model = MultimodalModel(cfg, pre.output_shapes(), pre)
    # a few random BatchNorm statistics so eval mode is not the identity
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return model.eval()
