"""gcp-storage-emulator with three behaviours of GCS that it lacks and that gs:// workdirs
rely on, added around its handlers (run as a script: --port, --bucket):

- a download names the object's generation (x-goog-generation), which tensorstore (orbax's
  array files) reads to update a file in place;
- an upload or a delete with ifGenerationMatch (0: "only if absent") is refused with 412
  when the object's generation differs: the atomic step of the workdir lock and of
  tensorstore's manifest updates;
- the same for ifGenerationNotMatch on a download (304), tensorstore's cache check.
"""
import argparse
import threading
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_ONE_AT_A_TIME = threading.Lock()  # a precondition's check and its write, as one step


def _generation(storage, bucket: str, name: str) -> str:
  try:
    return str(storage.get_file_obj(bucket, name)["generation"])
  except NotFound:
    return "0"


def _upload_name(request):
  if "name" in request.query:
    return request.query["name"][0]
  data = request.data
  return data["meta"].get("name") if isinstance(data, dict) and "meta" in data else None


def _precondition_failed(request, storage, name) -> bool:
  wanted = request.query.get("ifGenerationMatch")
  return bool(wanted and name is not None and
              _generation(storage, request.params["bucket_name"], name) != wanted[0])


def _with_precondition(original, object_name):
  """`original` (an upload or a delete), refused with 412 when the request's ifGenerationMatch
  differs from the generation of the object `object_name(request)` names."""
  def handler(request, response, storage, *args, **kwargs):
    with _ONE_AT_A_TIME:
      if _precondition_failed(request, storage, object_name(request)):
        response.status = HTTPStatus.PRECONDITION_FAILED
        return None
      return original(request, response, storage, *args, **kwargs)
  return handler


def _wrap_download(original):
  def download(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    generation = _generation(storage, bucket, name)
    unchanged = request.query.get("ifGenerationNotMatch")
    if generation != "0" and unchanged and unchanged[0] == generation:
      response.status = HTTPStatus.NOT_MODIFIED
      response["x-goog-generation"] = generation
      return None
    result = original(request, response, storage, *args, **kwargs)
    if generation != "0":
      response["x-goog-generation"] = generation
      response["x-goog-metageneration"] = "1"
    return result
  return download


objects.insert = _with_precondition(objects.insert, _upload_name)
objects.delete = _with_precondition(objects.delete, lambda request: request.params["object_id"])
objects.download = _wrap_download(objects.download)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", required=True)
  args = parser.parse_args()
  from gcp_storage_emulator import server  # after the handlers are wrapped: its routes copy them
  server.create_server("127.0.0.1", args.port, in_memory=True, default_bucket=args.bucket).run()


if __name__ == "__main__":
  main()
