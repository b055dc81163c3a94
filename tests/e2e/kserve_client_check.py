"""The KServe Python SDK's REST client (kserve.InferenceRESTClient, protocol v2) against zkserve;
run by the kserve venv (its pins clash with zkserve's). Prints one JSON line with what it saw.
usage: kserve_client_check.py BASE_URL ROWS.npy
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(base_url: str, rows_path: str) -> None:
    rows = np.load(rows_path)
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=300, retries=1))
    seen = {"live": await client.is_server_live(base_url), "ready": await client.is_server_ready(base_url),
            "model_ready": await client.is_model_ready(base_url, "demo-mlp")}
    features = InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows, binary_data=False)
    request = InferRequest(model_name="demo-mlp", infer_inputs=[features], request_id="sdk-1",
                           parameters={"attest": "sync"})
    response = await client.infer(base_url, request, model_name="demo-mlp")
    outputs = {output.name: output for output in response.outputs}
    proof = outputs["zk_proof"].data[0]
    seen |= {"id": response.id, "parameters": response.parameters,
             "scores": outputs["scores"].as_numpy().tolist(),
             "proof": proof.decode() if isinstance(proof, bytes) else proof}
    # the binary tensor extension both ways: raw FP32 in, raw outputs back (header-split body)
    raw = InferInput("features", list(rows.shape), "FP32")
    raw.set_data_from_numpy(rows, binary_data=True)
    headers = {}
    response = await client.infer(base_url, InferRequest(model_name="demo-mlp", infer_inputs=[raw], request_id="sdk-2",
                                                         parameters={"attest": "none", "binary_data_output": True}),
                                  model_name="demo-mlp", response_headers=headers)
    seen |= {"binary_scores": {o.name: o for o in response.outputs}["scores"].as_numpy().tolist(),
             "binary_answer": {k.lower(): v for k, v in headers.items()}.get("inference-header-content-length")}
    bad = InferInput("features", [1, 15], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 15), np.float32), binary_data=False)
    try:
        await client.infer(base_url, InferRequest(model_name="demo-mlp", infer_inputs=[bad]), model_name="demo-mlp")
        seen["bad"] = None
    except httpx.HTTPStatusError as error:
        seen["bad"] = [error.response.status_code, error.response.json()["error"]]
    await client.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
