"""How a candidate is scored: data, proxy training, MACs, latency, zero-cost proxies.

Nothing here imports torch at package import time: the device agent under
`objectives.latency` must run on a board that has only numpy and onnxruntime.
"""
