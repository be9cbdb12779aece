"""Triton python model: a network served by ONNX Runtime on CPU.

Generic: tensor names and dims come from the model config, the graph is
``model.onnx`` in the version directory, ``intra_op_num_threads`` is a config
parameter. All requests the dynamic batcher delivers run as one ONNX Runtime
batch (see ``drape_runtime.runner.BatchedOnnxRunner``); a request with wrong
shapes gets its own INVALID_ARGUMENT response and the rest still run.
"""

import os

import triton_python_backend_utils as pb_utils

from drape_runtime.model_config import ModelConfig
from drape_runtime.runner import BatchedOnnxRunner, RequestShapeError, RunnerSettings


class TritonPythonModel:
    def initialize(self, args):
        config = ModelConfig.from_json(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.runner = BatchedOnnxRunner(RunnerSettings.from_model_config(config, version_dir))
        self.input_names = [t.name for t in config.inputs]
        self.model_name = config.name
        self.logger = pb_utils.Logger

    def execute(self, requests):
        batch = []
        for request in requests:
            tensors = {}
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    tensors[name] = tensor.as_numpy()
            batch.append(tensors)

        responses = []
        for result in self.runner.run(batch):
            if isinstance(result, RequestShapeError):
                error = pb_utils.TritonError(f"{self.model_name}: {result}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            elif isinstance(result, Exception):
                self.logger.log_error(str(result))
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result), pb_utils.TritonError.INTERNAL)))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.runner = None
