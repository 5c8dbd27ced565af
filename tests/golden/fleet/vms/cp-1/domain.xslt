<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0" exclude-result-prefixes="qemu">
  <xsl:output method="xml" indent="yes"/>
  <xsl:strip-space elements="*"/>
  <!-- gpu-stack: rendered by render/domain_xslt.py; any change here replaces the domain. -->
  <xsl:template match="/">
    <xsl:if test="not(/domain/cpu) or not(/domain/features) or not(/domain/devices)">
      <xsl:message terminate="yes">gpu-stack: provider XML lacks cpu, features or devices; refusing to drop the passthrough settings</xsl:message>
    </xsl:if>
    <xsl:apply-templates/>
  </xsl:template>
  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain">
    <xsl:copy><xsl:apply-templates select="@*|node()"/>
      <iothreads>1</iothreads>
      <cputune><vcpupin vcpu="0" cpuset="1"/><vcpupin vcpu="1" cpuset="2"/><vcpupin vcpu="2" cpuset="3"/><vcpupin vcpu="3" cpuset="4"/><emulatorpin cpuset="0,32,64,96"/><iothreadpin iothread="1" cpuset="0,32,64,96"/></cputune>
      <numatune><memory mode="strict" nodeset="0"/><memnode cellid="0" mode="strict" nodeset="0"/></numatune>
    </xsl:copy>
  </xsl:template>
  <!-- a fixed UUID: the next create redefines a leftover of a failed start (render/domain_xslt.py) -->
  <xsl:template match="/domain/name">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
    <uuid>1a9fa12b-a9cd-51b4-9a38-ffa604441c16</uuid>
  </xsl:template>
  <xsl:template match="/domain/uuid"/>
  <xsl:template match="/domain/cpu">
    <xsl:copy><xsl:apply-templates select="@*|node()"/>
      <topology sockets="1" dies="1" cores="4" threads="1"/>
      <maxphysaddr mode="passthrough"/>
      <numa><cell id="0" cpus="0-3" memory="16384" unit="MiB"/></numa>
    </xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/features">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>
  <xsl:template match="/domain/devices">
    <xsl:copy><xsl:apply-templates select="@*|node()"/>
      <memballoon model="none"/>
    </xsl:copy>
  </xsl:template>
  <!-- q35 has no IDE: the provider's cloud-init cdrom moves to SATA; dev hdd and serial cloudinit stay. -->
  <xsl:template match="/domain/devices/disk[@device='cdrom']/target/@bus[.='ide']">
    <xsl:attribute name="bus">sata</xsl:attribute>
  </xsl:template>
  <!-- libvirtxml omits the console type; libvirt defaults to pty, the RNG schema wants it spelled out. -->
  <xsl:template match="/domain/devices/console[not(@type)]">
    <xsl:copy><xsl:attribute name="type">pty</xsl:attribute><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>
  <!-- the root disk (the provider's only device='disk') is served by I/O thread 1 on the housekeeping CPUs -->
  <xsl:template match="/domain/devices/disk[@device='disk'][1]/driver">
    <xsl:copy><xsl:apply-templates select="@*"/><xsl:attribute name="iothread">1</xsl:attribute><xsl:apply-templates select="node()"/></xsl:copy>
  </xsl:template>
</xsl:stylesheet>
