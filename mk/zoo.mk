# The channel graph over torchvision's whole classification zoo (issue 30, tests_zoo/test_zoo.py): every
# model up to ZOO_MAX_PARAMS parameters (random weights, nothing downloaded) is discovered and up to
# ZOO_DFCS of its DFCs pruned together, checked exact in float64. The per-model report (DFCs, coupled,
# share of channels prunable, refused spaces with their reasons) goes to build/zoo/report.md.
#
#   make test-zoo                        the whole zoo up to 150M parameters (minutes)
#        [ZOO_MODELS=resnet18,vit_b_16]  only these models
#        [ZOO_MAX_PARAMS=1e9]            a larger size limit (the largest take minutes each in float64)

ZOO_MAX_PARAMS ?= 150e6
ZOO_DFCS ?= 4
ZOO_MODELS ?=

.PHONY: test-zoo

help::
	@echo "make test-zoo  every torchvision classification model up to $(ZOO_MAX_PARAMS) parameters: discovered, pruned, checked exact (report: build/zoo/report.md)"

test-zoo: install
	ZOO_MAX_PARAMS=$(ZOO_MAX_PARAMS) ZOO_DFCS=$(ZOO_DFCS) ZOO_MODELS=$(ZOO_MODELS) \
		$(PY) -m pytest tests_zoo -q -p no:cacheprovider $(PYTEST_ARGS)
	@echo "report: build/zoo/report.md"
