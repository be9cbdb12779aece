"""Triton python model: composite the try-on result into the full-resolution person image.

Logic lives in ``drape_serving.prepost.tryon_composite``; this file only moves
tensors between Triton and it.
"""

import triton_python_backend_utils as pb_utils

from drape_serving.model_config import ModelConfig
from drape_serving.prepost import TryonPostLayout


class TritonPythonModel:
    def initialize(self, args):
        self.layout = TryonPostLayout.from_config(ModelConfig.from_json(args["model_config"]))
        self.input_names = (self.layout.tryon, self.layout.edit_mask, self.layout.orig)
        self.logger = pb_utils.Logger

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                inputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                outputs = self.layout.run(inputs)
                tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one broken request must not fail the batch
                self.logger.log_error(f"tryon_postprocess failed: {type(exc).__name__}: {exc}")
                error = pb_utils.TritonError(f"tryon_postprocess failed: {exc}", pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        pass
