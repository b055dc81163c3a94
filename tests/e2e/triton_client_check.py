"""A stock tritonclient[grpc] client against zkserve; run by the tritonclient venv.

tritonclient ships its own `inference` protos (and pins protobuf < 7), so it cannot share
a process with zkserve's stubs. Prints one JSON line with what it saw.
usage: triton_client_check.py HOST:PORT ROWS.npy
"""

import json
import sys

import numpy as np
import tritonclient.grpc as triton


def main(address: str, rows_path: str) -> None:
    client = triton.InferenceServerClient(url=address)
    rows = np.load(rows_path)
    metadata = client.get_model_metadata("demo-mlp", as_json=True)
    request_input = triton.InferInput("features", list(rows.shape), "FP32")
    request_input.set_data_from_numpy(rows)
    result = client.infer("demo-mlp", [request_input], parameters={"attest": "sync"})
    parameters = result.get_response().parameters
    proof = result.as_numpy("zk_proof")
    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("demo-mlp"),
        "server_name": client.get_server_metadata(as_json=True)["name"],
        "inputs": [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata["inputs"]],
        "scores": result.as_numpy("scores").tolist(),
        "parameters": {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in parameters.items()},
        "proof": proof[0].decode(),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
