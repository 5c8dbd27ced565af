#!/usr/bin/env bash
# [unknown until deploy: this phase's parameters come from other resources' outputs]
