"""The kubelet's pod-resources gRPC API (v1 ``PodResourcesLister.List``): which pod holds which device.

``api.proto`` is the subset of upstream's ``k8s.io/kubelet/pkg/apis/podresources/v1/api.proto``
that ``List`` needs, with upstream's field numbers; ``api_pb2*.py`` are generated from it by
grpcio-tools 1.76.0 (the command is at the top of ``api.proto``) and committed, so the agent
needs only ``grpcio`` and ``protobuf`` at run time. ``client.py`` is the collector's caller.
"""
