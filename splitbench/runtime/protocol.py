"""The wire protocol between device client and edge server, shared by both (torch-free): routes and headers."""

INFER = "/v1/infer"  # POST one bitstream (application/octet-stream) → JSON answer
MODEL = "/v1/model"  # GET the served model (run, fingerprint, tasks, classes, streams it reads)
STATS = "/v1/stats"  # GET requests answered and refused, batch sizes
HEALTH = "/v1/health"  # GET {"status": "ok"}, never behind the token
FINGERPRINT_HEADER = "X-Splitbench-Fingerprint"  # the model fingerprint of the bundle that coded the stream
REQUEST_ID_HEADER = "X-Request-Id"  # the client's id for a request, the same on a retry; echoed back
MAX_REQUEST_ID = 128
